"""Test helpers for hf_mpwriter.

`HubServer` is a Hub-compatible HTTP server that the real `huggingface_hub` client can talk to, so
tests and benchmarks exercise the real upload code paths without network access: git repositories
(commits, legacy LFS and Xet uploads, downloads), Storage Buckets, and fault injection; it enforces
the Hub's limits (`HubLimits`: entries per folder always, the API window and commit rate on demand). Run it
standalone with ``python -m hf_mpwriter.testing.hub_server --port 8765``.

It needs the ``testing`` extra (``lz4``, to read the chunks of Xet uploads): a user who only logs
never installs it, so the server's entry points check for it first (:func:`require_testing_extra`)
and say how to get it, instead of failing deep inside the first Xet upload.
"""

from typing import TYPE_CHECKING, Any

from .extra import TESTING_EXTRA, require_testing_extra

if TYPE_CHECKING:
    from .hub_server import Fault, HubServer
    from .limits import HubLimits

__all__ = ["TESTING_EXTRA", "Fault", "HubLimits", "HubServer", "require_testing_extra"]

def __getattr__(name: str) -> Any:
    # Imported lazily so that `python -m hf_mpwriter.testing.hub_server` does not import the module
    # twice (runpy warns when a package __init__ already imported the module it is about to run).
    if name in ("Fault", "HubServer"):
        from . import hub_server

        return getattr(hub_server, name)
    if name == "HubLimits":
        from .limits import HubLimits

        return HubLimits
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
