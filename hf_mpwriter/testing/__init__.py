"""Test helpers for hf_mpwriter.

`HubServer` is a Hub-compatible HTTP server that the real `huggingface_hub` client can talk to, so
tests and benchmarks exercise the real upload code paths without network access: git repositories
(commits, legacy LFS and Xet uploads, downloads), Storage Buckets, and fault injection. Run it
standalone with ``python -m hf_mpwriter.testing.hub_server --port 8765``.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .hub_server import Fault, HubServer

__all__ = ["Fault", "HubServer"]


def __getattr__(name: str) -> Any:
    # Imported lazily so that `python -m hf_mpwriter.testing.hub_server` does not import the module
    # twice (runpy warns when a package __init__ already imported the module it is about to run).
    if name in __all__:
        from . import hub_server

        return getattr(hub_server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
