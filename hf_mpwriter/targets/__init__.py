"""Where logs go: a Hub repository, a Hub Storage Bucket or a local directory, behind one small interface."""

from __future__ import annotations

from ..config import UploadConfig
from ..errors import ConfigurationError
from .base import Target
from .bucket import BucketTarget
from .hub import HubTarget
from .local import LocalTarget

__all__ = ["BucketTarget", "HubTarget", "LocalTarget", "Target", "target_for"]


def target_for(config: UploadConfig, token: str | None = None, endpoint: str | None = None) -> Target:
    """The target ``config`` names, on the Hub it records (``endpoint``: another one; neither: ``HF_ENDPOINT``'s).

    Here, not in the settings: writers read the settings, and only the uploader side builds targets."""
    endpoint = endpoint or config.endpoint
    if config.kind == "hub":
        assert config.repo_id
        return HubTarget(config.repo_id, prefix=config.prefix, repo_type=config.repo_type, revision=config.revision,
                         private=config.private, squash_history=config.squash_history, token=token, endpoint=endpoint,
                         shared_branch=config.nodes > 1,  # several nodes commit to the branch
                         http_timeout=config.http_timeout)
    if config.kind == "local":
        assert config.directory
        return LocalTarget(config.directory, config.prefix)
    if config.kind == "bucket":
        assert config.repo_id
        return BucketTarget(config.repo_id, prefix=config.prefix, private=config.private, token=token, endpoint=endpoint,
                            http_timeout=config.http_timeout)
    raise ConfigurationError(f"unknown target kind {config.kind!r} in the upload config")
