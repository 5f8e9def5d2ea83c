"""featx's version: the one place it is written (``pyproject.toml`` reads it from here for the distribution).

Example::

    from featx.version import __version__   # "0.1.0", also in a checkout that is not installed
"""

__version__ = "0.1.0"
