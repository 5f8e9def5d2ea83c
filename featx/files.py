"""Writing files so that nothing the user owns is lost and no reader sees half a file.

:func:`write_atomically` writes through a temporary file with a unique name in the target's folder, flushes it to
disk, then moves it into place: with ``overwrite=False`` by a hard link, which fails if the target exists (so of two
concurrent writers exactly one succeeds and the file holds its bytes); with ``overwrite=True`` by a rename. The
temporary file is removed whatever happens, and one a killed writer left (its name says which host, PID namespace and
process made it, and that process is gone) is removed by the next write to the same path.

Example::

    write_atomically(Path("out/bb.pt"), lambda tmp: torch.save(state, tmp), overwrite=False, what="save()")
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import socket
import stat
from pathlib import Path
from typing import Callable, List, Optional

from featx.errors import ArgumentError, printable
from featx.spec.limits import expand_home, quoted, unknown_home

#: what :func:`write_atomically`'s temporary files are called: ``.<target name>.<host>-<pid>-<random>.partial``
PARTIAL_SUFFIX = ".partial"


def _process_namespace() -> str:
    """Where this process's id means something: its host name and (Linux) its PID namespace, e.g.
    ``"gpu-01 pid:[4026531836]"``. Containers sharing a folder and a host name (``docker --network=host``) number
    their processes each in their own namespace."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:  # not Linux, or no /proc: the host name alone
        namespace = ""
    return f"{socket.gethostname()} {namespace}"


#: this host and PID namespace, in temporary file names: a process id is looked up only where it was given
_HOST = hashlib.blake2s(_process_namespace().encode("utf-8", "replace"), digest_size=4).hexdigest()
#: errors of ``os.link`` on file systems without hard links (FAT, some network mounts)
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.ENOSYS}


def _fsync(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _exists_error(path: Path, what: str, hint: str) -> ArgumentError:
    return ArgumentError(f"{what}: {printable_path(path)} exists; {hint} (nothing was written)")


def _write_error(path: Path, what: str, error: OSError) -> ArgumentError:
    return ArgumentError(
        f"{what}: cannot write {printable_path(path)}: {error.strerror or error} (nothing was written)"
    )


def _place(partial: Path, path: Path, overwrite: bool, what: str, hint: str, shown: Path) -> None:
    """Move ``partial`` to ``path`` (named ``shown`` in errors: the path as the caller gave it)."""
    if overwrite:
        os.replace(partial, path)
        return
    try:
        os.link(partial, path)
    except FileExistsError:
        raise _exists_error(shown, what, hint) from None
    except OSError as error:
        if error.errno not in _NO_HARD_LINKS:
            raise
        if path.exists():  # no hard links here: check, then rename (a writer in between could still be replaced)
            raise _exists_error(shown, what, hint) from None
        os.replace(partial, path)


def _process_is_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # another user's process, or no permission to ask: alive as far as featx knows
        return False
    return False


def _remove_left_partials(path: Path) -> None:
    """Remove the temporary files of ``path`` that writers on this host and in this PID namespace left when they
    were killed (their process is gone), with the ``.data`` file torch's ONNX exporter wrote beside one before featx
    refused such exports; another writer's that is still running, another host's or container's and anything not a
    plain file are left alone."""
    left = re.compile(
        rf"\.{re.escape(path.name[:200])}\.{_HOST}-(\d+)-[0-9a-f]{{8}}{re.escape(PARTIAL_SUFFIX)}(?:\.data)?"
    )
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return
    for entry in entries:
        match = left.fullmatch(entry.name)
        if match and entry.is_file(follow_symlinks=False) and _process_is_gone(int(match.group(1))):
            Path(entry.path).unlink(missing_ok=True)


def _new_partial(path: Path, what: str) -> Path:
    """Create an empty, unique temporary file beside ``path`` (exclusive create, permissions as the umask says, like
    any file the user creates), named with this host, PID namespace and process."""
    for _ in range(16):
        partial = path.with_name(f".{path.name[:200]}.{_HOST}-{os.getpid()}-{secrets.token_hex(4)}{PARTIAL_SUFFIX}")
        try:
            os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return partial
        except FileExistsError:
            continue
        except OSError as error:
            raise ArgumentError(f"{what}: cannot write in {path.parent}: {error.strerror or error}") from None
    raise ArgumentError(f"{what}: cannot find a free temporary name beside {path}")


def path_argument(value: object, what: str) -> Path:
    """``value`` as a :class:`Path`, a leading ``~`` expanded (as in spec files and ``weights``);
    :class:`ArgumentError` naming ``what`` unless it is a ``str`` or path-like that is not empty.
    Example: ``path = path_argument(path, "save(): path")``."""
    text = _fspath(value) if isinstance(value, (str, os.PathLike)) else None
    if text == "" or (text and "\0" in text):  # a command line's own words: no Python types named
        reason = "not empty" if text == "" else "without NUL characters"
        raise ArgumentError(f"{what} must be a file system path ({reason}), got {value!r:.80}")
    if not text:
        raise ArgumentError(
            f"{what} must be a file system path (a str or pathlib.Path, without NUL characters), got {value!r:.80}"
        )
    home = unknown_home(text)
    if home is not None:
        raise ArgumentError(f"{what}: {home}")
    return expand_home(text)


def printable_path(path: os.PathLike[str] | str) -> str:
    """``path`` as text any stream or log file writes, on one line: bytes of its name that are not UTF-8 (held in a
    ``str`` as surrogates) shown as ``\\xff``, control characters escaped (``\\n``, ``\\x1b``). Example:
    ``log.warning("skipped %s", printable_path(path))``."""
    return printable(os.fspath(path))


def is_utf8_path(path: os.PathLike[str] | str) -> bool:
    """Whether the bytes of ``path`` are UTF-8 (a name that is not is held in a ``str`` as surrogates, which torch's
    and safetensors' readers cannot take). Example: ``is_utf8_path("caf\\udce9.pt") is False``."""
    try:
        os.fsencode(path).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def utf8_path(path: Path, what: str, reader: str = "safetensors opens") -> Path:
    """``path`` if its bytes are UTF-8; :class:`ArgumentError` naming ``what`` otherwise (``reader``: what takes UTF-8
    paths only; safetensors: a file written under another name could not be read back). Example:
    ``utf8_path(out, "p")``."""
    if not is_utf8_path(path):
        raise ArgumentError(
            f"{what}: '{printable_path(path)}' is not valid UTF-8, and {reader} UTF-8 paths only; rename it"
        )
    return path


def refuse_interpolation_in_path(path: Path, what: str) -> None:
    """:class:`ArgumentError` naming ``what`` when ``path`` holds ``${``: a loaded backbone's spec names its file, and
    featx refuses interpolations in every spec, so :func:`featx.load` could not take the file back. Example:
    ``refuse_interpolation_in_path(Path("run_${seed}.pt"), "save(): path")`` raises."""
    if "${" in os.fspath(path):
        raise ArgumentError(
            f"{what}: '{printable_path(path)}' holds '${{', which featx.load cannot take (the loaded backbone's spec "
            "names its file, and featx refuses interpolations in specs); rename it"
        )


def file_path_argument(value: object, what: str) -> Path:
    """:func:`path_argument` for a file: a path ending in a separator, ``.`` or ``..`` names a folder (``Path``
    would drop the ending and write a file of the folder's name). Example: ``file_path_argument("out/", "p")``."""
    path = path_argument(value, what)
    text = _fspath(value) or ""
    last = re.split("|".join(re.escape(sep) for sep in filter(None, (os.sep, os.altsep))), text)[-1]
    if last in ("", ".", ".."):
        raise ArgumentError(
            f"{what}: {quoted(text)} ends in {last or text[-1]!r}, so it names a folder; give a file path"
        )
    return path


def _fspath(value: object) -> Optional[str]:
    """``os.fspath(value)`` when it is a str (a path-like may give bytes, or fail), else None."""
    try:
        text = os.fspath(value)  # type: ignore[call-overload]
    except TypeError:
        return None
    return text if isinstance(text, str) else None


def flag_argument(value: object, what: str) -> bool:
    """``value`` if it is a ``bool``; :class:`ArgumentError` naming ``what`` otherwise (``"yes"`` is not ``True``)."""
    if not isinstance(value, bool):
        raise ArgumentError(f"{what} must be True or False, got {value!r:.80}")
    return value


#: how an environment variable says yes or no (any case); unset is no
_YES, _NO = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def environment_flag(name: str) -> bool:
    """Whether the environment variable ``name`` says yes (``1``, ``true``, ``yes``, ``on``; unset, empty, ``0``,
    ``false``, ``no`` and ``off`` say no); :class:`ArgumentError` naming it for any other value, never a guess.
    Example: ``environment_flag("FEATX_OFFLINE")``."""
    value = os.environ.get(name, "").strip().lower()
    if value in _YES or value in _NO:
        return value in _YES
    raise ArgumentError(
        f"{name}={quoted(os.environ[name])}: set it to 1 (or true, yes, on) or to 0 (or false, no, off, or empty)"
    )


def _link_target(link: Path) -> Optional[Path]:
    """Where the symbolic link ``link`` points, or None where it is gone (replaced since it was looked at)."""
    try:
        return link.readlink()
    except OSError:
        return None


def prepare_folder(folder: Path, what: str) -> None:
    """Create ``folder`` (and its parents); :class:`ArgumentError` naming it when that is impossible."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # the folder's own name is taken: a file, or a link to nothing
        reason = "a file is in the way"
        if folder.is_symlink():
            target = _link_target(folder)
            reason = (
                f"it is a symbolic link to {printable_path(target) if target else 'a folder'}, which does not exist"
            )
        raise ArgumentError(f"{what}: cannot create the folder {printable_path(folder)}: {reason}") from None
    except OSError as error:
        raise ArgumentError(
            f"{what}: cannot create the folder {printable_path(folder)}: {error.strerror or error}"
        ) from None
    if not folder.is_dir():
        raise ArgumentError(f"{what}: {printable_path(folder)} is not a folder")


def without_climbs_out_of_new_folders(path: Path) -> Path:
    """``path`` without each ``NEW/..`` whose ``NEW`` does not exist: the OS resolves ``NEW/..`` only once ``NEW``
    exists, so writing the file would create ``NEW`` for nothing (``zz/../out.yaml`` is ``out.yaml``). A ``..``
    after a folder that exists (a symbolic link too) is left to the OS. Example:
    ``without_climbs_out_of_new_folders(Path("a/b/../../c/x.pt")) == Path("c/x.pt")`` where ``a`` does not exist."""
    parts: List[str] = []
    for part in path.parts:
        if part == ".." and parts and parts[-1] != ".." and not os.path.lexists(Path(*parts)):
            parts.pop()
        else:
            parts.append(part)
    return Path(*parts) if parts else Path(".")


def missing_folders(folder: Path) -> List[Path]:
    """``folder`` and those above it that do not exist yet (what writing into it creates), deepest first."""
    missing = []
    while folder != folder.parent and not os.path.lexists(folder):
        missing.append(folder)
        folder = folder.parent
    return missing


def remove_empty_folders(folders: List[Path]) -> None:
    """Remove ``folders`` (deepest first) while they are empty: one that something else wrote into stays, and so
    do those above it."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def write_atomically(
    path: Path,
    write: Callable[[Path], object],
    *,
    overwrite: bool,
    what: str,
    hint: str = "set overwrite to replace it",
    clean_left: bool = True,
) -> Path:
    """``write(temporary)``, then move the temporary file to ``path`` whole (see the module docstring).

    ``what`` names the argument or key in errors (``"save()"``, ``"export.path"``), ``hint`` says how to overwrite;
    ``clean_left=False`` keeps the temporary files killed writers left (a caller that removes them itself, once, as
    featx-extract does in a folder of many shards, where looking at every write would cost the folder's size).
    An existing ``path`` is kept (``ArgumentError``) unless ``overwrite``; a ``path`` that is a folder, a device, a
    fifo or a socket is always refused (``/dev/null`` is never replaced by a file). Errors name ``path`` as given;
    the path returned, where the file is, has no ``NEW/..`` of a folder that did not exist (none is created for it:
    :func:`without_climbs_out_of_new_folders`).
    """
    shown = Path(path)
    path = without_climbs_out_of_new_folders(shown)
    try:
        if path.is_symlink():  # replacing it would replace the link (/dev/stdout is one), writing through it the target
            raise ArgumentError(
                f"{what}: {printable_path(shown)} is a symbolic link; featx writes only to a file path (nothing was "
                "written): give the path it points to, or another one"
            )
        if path.is_dir():
            raise ArgumentError(f"{what}: {printable_path(shown)} is a folder; give a file path")
        if path.exists() and not stat.S_ISREG(path.stat().st_mode):  # before "exists": overwriting cannot help
            raise ArgumentError(
                f"{what}: {printable_path(shown)} is not a regular file (a device, fifo or socket); featx replaces "
                "only files (nothing was written)"
            )
        if path.exists() and not overwrite:
            raise _exists_error(shown, what, hint)
    except OSError as error:
        raise _write_error(shown, what, error) from None
    folders = missing_folders(path.parent)
    try:
        prepare_folder(path.parent, what)
        if clean_left:
            _remove_left_partials(path)
        partial = _new_partial(path, what)
        try:
            created = partial.stat()  # its mode is what the umask gives a new file
            write(partial)
            if partial.stat().st_ino != created.st_ino:  # a writer that replaced the file (safetensors makes it 0600)
                partial.chmod(stat.S_IMODE(created.st_mode))
            _fsync(partial)
            _place(partial, path, overwrite, what, hint, shown)
            _fsync_folder(path.parent)
        except OSError as error:  # a full disk, a name too long, a folder made read-only meanwhile
            raise _write_error(shown, what, error) from None
        finally:
            partial.unlink(missing_ok=True)
    except BaseException:  # nothing was written: nor are the folders made for the file left
        remove_empty_folders(folders)
        raise
    return path


def first_line_of(path: Path) -> str:
    """The first line of the text file ``path`` (without its line break): how a generated page is recognised."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        return handle.readline().rstrip("\n")


def refuse_a_foreign_page(path: Path, title: str, what: str) -> None:
    """Refuse ``path`` when it is a file whose first line is not ``title``: the user's file, not a page the script
    wrote before. Scripts check their page's path with it before long work (the write checks again). Example::

        refuse_a_foreign_page(Path("docs/results/cpu.md"), "# Benchmark results (generated)", "--output")
    """
    path = Path(path)
    if not path.is_file():
        return
    try:
        first = first_line_of(path)
    except OSError as error:  # no permission to read it
        raise _write_error(path, what, error) from None
    if first != title:
        raise ArgumentError(
            f"{what}: {path} exists and is not a page this script wrote (its first line is not {title!r}); "
            "nothing was written: give another path, or move that file"
        )


def write_generated_page(path: Path, text: str, what: str) -> Path:
    """Write ``text``, a page a script generates (its first line is the page's title), to ``path`` atomically.

    An existing file is replaced only when its first line is that title, i.e. the same script wrote it; anything
    else there is the user's and is refused (nothing written, its content never repeated). Example::

        write_generated_page(Path("docs/results/cpu.md"), "# Benchmark results (generated)\\n...", "--output")
    """
    refuse_a_foreign_page(Path(path), text.splitlines()[0], what)
    return write_atomically(
        Path(path), lambda partial: partial.write_text(text, encoding="utf-8"), overwrite=True, what=what
    )
