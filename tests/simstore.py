"""What the simulations' in-memory stores (``leasesim``, ``jobsim``) have no use for: one store, one prefix, no
clock of its failures."""

from __future__ import annotations

import functools

from hf_mpwriter.uploader.coordination.protocol import Kind, Malformed, Skipped, kind_of
from hf_mpwriter.uploader.coordination.store import CoordinationStore, StoreAddress
from hf_mpwriter.uploader.jobrun.values import Held, parse_value


class OneStore:
    """The members of :class:`~hf_mpwriter.uploader.coordination.store.CoordinationStore` a simulation's single
    store does not simulate: each raises, so that code that starts using one fails its seeds instead of reading a
    made-up answer. ``what`` names the store in the error."""

    what = "the simulation's store"

    def silent_for(self) -> float:
        raise NotImplementedError(f"{self.what} keeps no time of its failures")

    def scoped(self, prefix: str) -> CoordinationStore:
        raise NotImplementedError(f"{self.what} has one prefix")

    def elsewhere(self, address: StoreAddress) -> CoordinationStore:
        raise NotImplementedError(f"{self.what} is the job's only one")

    def move_to(self, address: StoreAddress, server: object = None) -> None:
        raise NotImplementedError(f"{self.what} is the job's only one")


@functools.lru_cache(maxsize=4096)
def _kind_of(key: str) -> Kind | None:
    try:
        return kind_of(key)
    except KeyError:
        return None


def undecodable(key: str, value: bytes | None) -> str | None:
    """Why ``value``, just written at ``key``, does not decode as the protocol's table says that key holds
    (:data:`~hf_mpwriter.uploader.coordination.protocol.KINDS`); ``None`` where it does, or it is unset (``b""``).
    Every simulated write goes through it: a value a node writes that another cannot read fails the seed."""
    if not value:
        return None
    kind = _kind_of(key)
    if kind is None:
        return f"{key} is no key of the protocol's table"
    try:
        if kind.decode is not None:
            kind.decode(value)
        elif key == "view/held":
            skipped = Skipped()
            Held.parse(value, skipped)
            if skipped.total:
                return f"{key}: {value[:200]!r} does not parse"
        else:
            parse_value(int(key[5:]) if key[5:].isdigit() else None, value)
    except Malformed as exc:
        return f"{key}: {value[:200]!r}: {exc}"
    return None
