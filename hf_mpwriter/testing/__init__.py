"""Test helpers for hf_mpwriter.

`HubServer` is a Hub-compatible HTTP server that the real `huggingface_hub` client can talk to, so
tests and benchmarks exercise the real upload code paths without network access.
"""

from .hub_server import Fault, HubServer

__all__ = ["Fault", "HubServer"]
