"""Where logs go: a Hub repository, a Hub Storage Bucket or a local directory, behind one small interface."""

from .base import Target
from .bucket import BucketTarget
from .hub import HubTarget
from .local import LocalTarget

__all__ = ["BucketTarget", "HubTarget", "LocalTarget", "Target"]
