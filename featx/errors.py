"""Exception types raised by featx.

Every error featx raises on purpose derives from :class:`FeatxError`, so callers can catch them all::

    try:
        featx.build("resnet5")
    except featx.SpecError as err:
        print(err)   # backbone.model: unknown torchvision model 'resnet5'; did you mean resnet50? ...
"""

from __future__ import annotations

#: the longest message a featx error carries; longer ones (a value a hostile file made huge) are cut
MAX_MESSAGE_CHARS = 4000


def first_line(error: object) -> str:
    """The first non-blank line of ``str(error)`` (stripped), ``""`` for an empty message: how featx quotes a
    library's exception in its own error. Example: ``first_line(ValueError("bad\\nmore"))`` → ``'bad'``."""
    return next((line.strip() for line in str(error).splitlines() if line.strip()), "")


def _cut(text: str) -> str:
    """``text`` cut to :data:`MAX_MESSAGE_CHARS`, saying how much was left out."""
    if len(text) <= MAX_MESSAGE_CHARS:
        return text
    kept = MAX_MESSAGE_CHARS - 60
    return f"{text[:kept]}... ({len(text) - kept} more characters left out)"


def printable(text: str) -> str:
    """``text`` (a file name) on one line any stream can write: control characters escaped (``\\n``, ``\\x1b``, as
    :func:`featx.spec.limits.escaped` does), a byte of a file name that is not UTF-8 (held as a surrogate) as
    ``\\xff``, and any other lone surrogate as ``\\ud800``. Example: ``printable("a\\nb.yaml")`` is
    ``a\\\\nb.yaml``."""
    from featx.spec.limits import escaped  # here, as featx.spec.limits imports this module

    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate no file name's byte gives
        data = text.encode("utf-8", "backslashreplace")
    return escaped(data.decode("utf-8", "backslashreplace"))


class FeatxError(Exception):
    """Base class of every error featx raises on purpose. Its message is one printable line (:func:`printable`:
    a file name or value holding a line break cannot forge another line) and one longer than
    :data:`MAX_MESSAGE_CHARS` is cut, saying how much was left out, so no input can turn an error into megabytes of
    output."""

    def __init__(self, message: object = "") -> None:
        super().__init__(_cut(printable(str(message))))


class SpecError(FeatxError, ValueError):
    """A backbone spec is invalid.

    ``str(err)`` is ``"[origin: ]key: message"``; ``err.key`` is the key path (``backbone.stages.c5.slice``),
    ``err.origin`` the spec file it came from, if any, as given (``str(err)`` shows it :func:`printable`, as every
    featx error shows its message).
    """

    def __init__(self, key: str, message: str, *, origin: str | None = None) -> None:
        self.key = key
        self.message = _cut(message)
        self.origin = origin
        text = f"{key}: {message}"
        super().__init__(f"{origin}: {text}" if origin else text)

    def with_origin(self, origin: str) -> SpecError:
        """The same error, attributed to the spec file ``origin``."""
        return SpecError(self.key, self.message, origin=origin)


class WeightsError(FeatxError):
    """Weights could not be resolved or do not fit the layers the spec keeps."""


class DeviceError(FeatxError, RuntimeError):
    """The configured device is not available on this machine, or the input's device cannot run the backbone's
    layers (SyncBatchNorm training off CUDA)."""


class InputShapeError(FeatxError, ValueError):
    """A tensor passed to a backbone does not have the shape its first layer takes."""


class ArgumentError(FeatxError, ValueError):
    """An argument to a featx function or method is invalid (an unknown stage name, a negative rate)."""
