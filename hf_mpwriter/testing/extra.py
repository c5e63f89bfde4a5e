"""What the test Hub needs beyond hf_mpwriter's own requirements (the ``testing`` extra), and the
one-line error that says how to get it."""

from __future__ import annotations

from ..errors import ConfigurationError

#: How to install what the test Hub needs beyond hf_mpwriter's own requirements.
TESTING_EXTRA = "pip install 'hf_mpwriter[testing]'"


def require_testing_extra(what: str = "The test Hub (hf_mpwriter.testing.HubServer)") -> None:
    """Raise ``ConfigurationError`` saying how to install ``lz4`` when it cannot be imported."""
    try:
        import lz4.frame  # noqa: F401  (the Xet reference client writes LZ4 frames)
    except ImportError:
        raise ConfigurationError(
            f"{what} needs the lz4 package to read Xet uploads, and it is not installed: {TESTING_EXTRA} "
            "(or: pip install lz4)"
        ) from None
