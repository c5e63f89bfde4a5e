"""Where logs go: the Hugging Face Hub or a local directory, behind one small interface."""

from .base import Target
from .hub import HubTarget
from .local import LocalTarget

__all__ = ["Target", "HubTarget", "LocalTarget"]
