"""hf_mpwriter: every process of a distributed job logs to TensorBoard; one uploader per node
brings the logs to the Hugging Face Hub (or a local directory) safely, promptly and without loss."""

from .errors import ConfigurationError, HFMPWriterError, TargetError
from .hub_writer import HFSummaryWriter
from .writer import SummaryWriter

__version__ = "0.1.0"

__all__ = ["SummaryWriter", "HFSummaryWriter", "ConfigurationError", "HFMPWriterError", "TargetError", "__version__"]
