"""What the simulations' in-memory stores (``leasesim``, ``jobsim``) have no use for: one store, one prefix, no
clock of its failures."""

from __future__ import annotations

from hf_mpwriter.uploader.coordination.store import CoordinationStore, StoreAddress


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
