"""hf_mpwriter: every process of a distributed job logs to TensorBoard; one uploader per node
brings the logs to the Hugging Face Hub (or a local directory) safely, promptly and without loss."""

from typing import Any

from .errors import ConfigurationError, HFMPWriterError, TargetError

__version__ = "0.1.0"

__all__ = ["SummaryWriter", "HFSummaryWriter", "ConfigurationError", "HFMPWriterError", "TargetError", "__version__"]


def __getattr__(name: str) -> Any:
    """Lazy: ``python -m hf_mpwriter.uploader`` must not import the writers, which import
    tensorboardX, which imports torch (its cost per uploader start: docs/design-notes.md)."""
    if name == "HFSummaryWriter":
        from .writer.hub_writer import HFSummaryWriter

        return HFSummaryWriter
    if name == "SummaryWriter":
        from .writer.summary_writer import SummaryWriter

        return SummaryWriter
    raise AttributeError(f"module 'hf_mpwriter' has no attribute {name!r}")
