"""The job's own torch.distributed store, as the uploaders of a multi-node job use it.

Why this store: a multi-node job already runs one, which every node reaches at ``MASTER_ADDR:MASTER_PORT``; the
uploaders need nothing else to agree on one leader.

Why so careful: the store is the training job's lifeline, not ours. Only small values go in (:data:`MAX_VALUE_BYTES`;
the client drops its connection past 8 MiB), and every call has a short deadline in a throwaway thread: a store whose
host is frozen (SIGSTOP, a dead NIC) blocks ``get``/``compare_set`` for ever, GIL released, so the caller walks away
and abandons the call. Only the uploader uses it, never a training process. ``torch.distributed`` is imported only in
a multi-node job that has a store (its cost: docs/design-notes.md).
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Protocol, TypeVar

from ...timing import LEADER_POLL_S, STORE_CALL_S
from ..throwaway import Unfinished, call_in_thread

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: The largest value written to the store.
MAX_VALUE_BYTES = 256 * 1024
#: Keys per ``multi_get``/``multi_set`` round trip: a thousand offers of a few KB stay far below a client message's 8
#: MiB.
KEYS_PER_CALL = 256
#: Connections tried within a call's deadline (:func:`_connect`).
CONNECT_TRIES = 3
#: Calls still running after their deadline; past this many, the store is not asked again (each holds a thread and a
#: socket).
MAX_ABANDONED = 4


class StoreError(Exception):
    """The store did not answer in time, refused, or is gone."""


@dataclass(frozen=True)
class StoreAddress:
    """Where the job's store is, and the job it belongs to (its keys are scoped by it)."""

    host: str
    port: int
    job_id: str


def store_address(store: str | None, job_id: str | None) -> StoreAddress | None:
    """The job's store as the writer found it (the logdir's ``host:port`` and launch id); ``None``: each node commits
    itself."""
    if not store or not job_id:
        return None
    host, _, port = store.rpartition(":")
    return StoreAddress(host, int(port), job_id) if host and port.isdigit() else None


class CoordinationStore(Protocol):
    """The job's store as the coordination code uses it (:class:`JobStore`, or a simulation's in-memory store: mypy
    checks both against this). A call raises :class:`StoreError` where the store fails."""

    #: Seconds a call may take.
    deadline: float

    @property
    def address(self) -> StoreAddress:
        """Where the store is, and the job it belongs to."""

    @property
    def prefix(self) -> str:
        """What every key is scoped under (ends with ``/``)."""

    @property
    def moves(self) -> int:
        """Times this connection moved to another store."""

    @property
    def preemption(self) -> float:
        """The uploader's preemption deadline (monotonic), ``inf`` until it is signalled."""

    def get(self, key: str) -> bytes | None:
        """The value of ``key``, ``None`` if it was never set."""

    def set(self, key: str, value: bytes, largest: int = MAX_VALUE_BYTES) -> None:
        """Set ``key``; its value holds at most ``largest`` bytes."""

    def multi_get(self, keys: Sequence[str]) -> list[bytes]:
        """The values of ``keys``, which must all exist."""

    def multi_set(self, values: Mapping[str, bytes]) -> None:
        """Set every key of ``values``."""

    def append(self, key: str, value: bytes) -> None:
        """Append ``value`` to ``key`` (created if missing)."""

    def add(self, key: str, amount: int) -> int:
        """Add ``amount`` to the counter ``key`` (``0``: read it); its new value."""

    def compare_set(self, key: str, expected: bytes, desired: bytes) -> bool:
        """Set ``key`` to ``desired`` if it holds ``expected`` (``b""``: unset); whether it did."""

    def until(self, started: float, longest: float) -> float:
        """When a wait on the job begun at ``started`` ends: ``longest`` later, sooner once the uploader was
        signalled."""

    def hurry(self, deadline: float) -> None:
        """The uploader must be gone by ``deadline`` (monotonic): every wait on the job ends sooner."""

    def silent_for(self) -> float:
        """Seconds since the first of the calls that failed without one answering since (0: the last answered)."""

    def gone(self) -> bool:
        """Whether nothing listens at the store's address any more (its values are gone with it)."""

    def answers(self) -> bool:
        """Whether the store answers a call now."""

    def scoped(self, prefix: str) -> CoordinationStore:
        """The same store under another prefix, on the same connection."""

    def elsewhere(self, address: StoreAddress) -> CoordinationStore:
        """The store at ``address`` under the same prefix and deadline, on a connection of its own."""

    def move_to(self, address: StoreAddress, server: Any = None) -> None:
        """From now on, every view of this connection calls the store at ``address``."""


class _Connection:
    """This process's one connection to the job's store, shared by every view (:meth:`JobStore.scoped`): one call at a
    time, a call abandoned on any view drops the client for all, a preemption deadline shortens every view's waits."""

    def __init__(self, address: StoreAddress, deadline: float, server: Any) -> None:
        self.address, self.deadline, self.server = address, deadline, server
        self.preemption = math.inf  # monotonic: the uploader's preemption deadline, once signalled
        self.client: Any = None
        #: Commands sent to the store so far (a ``get`` is two): what a job's size costs the store, which serves the
        #: training too.
        self.round_trips = 0
        self.abandoned: list[threading.Thread] = []
        self.moves = 0  # times it moved to another store (:meth:`JobStore.move_to`)
        self.failing_since: float | None = None  # monotonic: the first of the calls that failed since one answered
        #: One call at a time: the node's commits, the leader's rounds and the lease share the connection,
        #: and a call abandoned by one must not drop the client under another's message.
        self.lock = threading.Lock()
        #: Held to move, and to install a new client: a call abandoned mid-connect installs none after a move.
        self.swap = threading.Lock()


class JobStore:
    """Bounded calls to one store: ``get``/``set``/``compare_set`` of small byte values under ``prefix``."""

    def __init__(self, address: StoreAddress, prefix: str, deadline: float = STORE_CALL_S, server: Any = None,
                 _connection: _Connection | None = None) -> None:
        """``server``: the store's server, where this process serves it (:func:`serve`): calls go through its own client
        (a second client in the process that serves the store is slow to connect)."""
        self._connection = _connection or _Connection(address, deadline, server)
        self.prefix = prefix.rstrip("/") + "/"

    def scoped(self, prefix: str) -> JobStore:
        """The same store under another prefix, on the same connection: no second connection per node."""
        return JobStore(self.address, prefix, _connection=self._connection)

    @property
    def address(self) -> StoreAddress:
        return self._connection.address

    def elsewhere(self, address: StoreAddress) -> JobStore:
        """The store at ``address`` under the same prefix, deadline and preemption deadline, on a connection of its
        own."""
        other = JobStore(address, self.prefix, self.deadline)
        other.hurry(self.preemption)
        return other

    @property
    def moves(self) -> int:
        """Times this connection moved to another store: a round begun on one store answers in none other."""
        return self._connection.moves

    def move_to(self, address: StoreAddress, server: Any = None) -> None:
        """From now on, every view of this connection calls the store at ``address`` (``server``: this process serves
        it). Calls abandoned on the old store do not count against the new one."""
        connection = self._connection
        with connection.lock, connection.swap:
            connection.address, connection.server, connection.client = address, server, None
            connection.abandoned, connection.failing_since = [], None
            connection.moves += 1

    @property
    def deadline(self) -> float:
        """Seconds a call may take (every view of the connection)."""
        return self._connection.deadline

    @deadline.setter
    def deadline(self, seconds: float) -> None:
        self._connection.deadline = seconds

    @property
    def preemption(self) -> float:
        return self._connection.preemption

    @property
    def round_trips(self) -> int:
        return self._connection.round_trips

    def silent_for(self) -> float:
        """Seconds since the first of the calls (any view's) that failed without one answering since (0: the last
        answered): unlike :meth:`gone`, it also tells a machine that is down, frozen or cut off."""
        since = self._connection.failing_since
        return 0.0 if since is None else time.monotonic() - since

    def answers(self) -> bool:
        """Whether the store answers a call now, within the deadline (something that merely listens does not)."""
        try:
            self._bounded(lambda client: client.check([self.prefix + "lease"]))
        except StoreError:
            return False
        return True

    @property
    def hanging(self) -> int:
        """Calls abandoned on this connection (any view) that still run: past :data:`MAX_ABANDONED`, no more calls."""
        return sum(thread.is_alive() for thread in self._connection.abandoned)

    # -- the calls -------------------------------------------------------------------------------
    def get(self, key: str) -> bytes | None:
        """The value of ``key``, ``None`` if it was never set (a plain ``get`` would wait for it)."""
        full = self.prefix + key

        def call(client: Any) -> bytes | None:
            return bytes(client.get(full)) if client.check([full]) else None

        return self._bounded(call, 2)

    def set(self, key: str, value: bytes, largest: int = MAX_VALUE_BYTES) -> None:
        """Set ``key``; ``largest``: the most its value may hold (a merge tree's group values are larger)."""
        _check_size(key, value, largest)
        full = self.prefix + key
        self._bounded(lambda client: client.set(full, value))

    def multi_get(self, keys: Sequence[str]) -> list[bytes]:
        """The values of ``keys``, which must all exist (the store waits for a missing one): one round trip
        per :data:`KEYS_PER_CALL` keys, so a leader reads a thousand nodes' offers at the cost of a few."""
        full = [self.prefix + key for key in keys]
        chunks = [full[i:i + KEYS_PER_CALL] for i in range(0, len(full), KEYS_PER_CALL)]
        return self._bounded(lambda client: [bytes(v) for chunk in chunks for v in client.multi_get(chunk)], len(chunks))

    def multi_set(self, values: Mapping[str, bytes]) -> None:
        """Set every key of ``values``, :data:`KEYS_PER_CALL` keys a round trip."""
        for key, value in values.items():
            _check_size(key, value)
        items = [(self.prefix + key, value) for key, value in values.items()]
        chunks = [items[i:i + KEYS_PER_CALL] for i in range(0, len(items), KEYS_PER_CALL)]

        def call(client: Any) -> None:
            for chunk in chunks:
                client.multi_set([k for k, _ in chunk], [v for _, v in chunk])

        self._bounded(call, len(chunks))

    def append(self, key: str, value: bytes) -> None:
        """Append ``value`` to ``key`` (created if missing): how a node joins the list of the job's nodes."""
        full = self.prefix + key
        self._bounded(lambda client: client.append(full, value))

    def add(self, key: str, amount: int) -> int:
        """Add ``amount`` to the counter ``key`` (``0``: read it); its new value. One round trip: the uploaders poll
        counters, so that they read the other keys only when something changed."""
        full = self.prefix + key
        return self._bounded(lambda client: int(client.add(full, amount)))

    def compare_set(self, key: str, expected: bytes, desired: bytes) -> bool:
        """Set ``key`` to ``desired`` if it holds ``expected`` (``b""``: if it is unset). Whether it did."""
        _check_size(key, desired)
        full = self.prefix + key
        return self._bounded(lambda client: bytes(client.compare_set(full, expected, desired)) == desired)

    # -- bounding ----------------------------------------------------------------------------------
    def hurry(self, deadline: float) -> None:
        """The uploader must be gone by ``deadline`` (monotonic): every wait ends sooner, one running too
        (:meth:`until`)."""
        self._connection.preemption = deadline

    def until(self, started: float, longest: float) -> float:
        """When a wait on the job begun at ``started`` (monotonic) ends: ``longest`` later or, once the uploader was
        signalled, after a third at most of what was left then before its deadline (the rest is the node's: taking its
        offer back, committing its files itself). Waits read it again as they wait, so a signal during one shortens
        it."""
        return started + min(longest, max(0.0, (self.preemption - started) / 3))

    def _bounded(self, call: Callable[[Any], T], round_trips: int = 1) -> T:
        """Run ``call(client)`` in a throwaway thread, one call at a time; :class:`StoreError` if it fails or outlives
        the deadline (waiting for another thread's call counts against it; importing the client once does not)."""
        from torch.distributed import TCPStore  # noqa: F401 - the first call's import, before its deadline starts

        started = time.monotonic()
        connection = self._connection
        if not connection.lock.acquire(timeout=max(0.0, self.until(started, self.deadline) - started)):
            self._failed()
            raise StoreError(f"the job's store at {self._where()} is busy with a call that does not end")
        try:
            result = self._bounded_locked(call, round_trips, started)
            connection.failing_since = None
            return result
        except StoreError:
            self._failed()
            raise
        finally:
            connection.lock.release()

    def _failed(self) -> None:
        """A call failed, as seen now (not when it began: a process paused mid-call is not a silent store)."""
        if self._connection.failing_since is None:
            self._connection.failing_since = time.monotonic()

    def _bounded_locked(self, call: Callable[[Any], T], round_trips: int, started: float) -> T:
        connection = self._connection
        connection.round_trips += round_trips
        connection.abandoned = [t for t in connection.abandoned if t.is_alive()]
        if len(connection.abandoned) >= MAX_ABANDONED:
            raise StoreError(f"the job's store at {self._where()} stopped answering ({len(connection.abandoned)} calls hang)")

        def wait() -> float:  # (``until`` read again: a signal during the call shortens it)
            return min(self.until(started, self.deadline) - time.monotonic(), LEADER_POLL_S / 2)

        stuck: threading.Thread | None = None
        failure = ""
        try:
            return call_in_thread("hf_mpwriter-store", lambda: call(self._connected()), wait)
        except Unfinished as exc:
            stuck = exc.thread
        except BaseException as exc:  # (any failure is the store's; said below, outside this block: no traceback kept)
            failure = str(exc)
        connection.client = None  # its socket may be stuck mid-message: every view's next call connects afresh
        if stuck is not None:
            connection.abandoned.append(stuck)
            raise StoreError(f"the job's store at {self._where()} did not answer within "
                             f"{time.monotonic() - started:.0f} s")
        raise StoreError(f"the job's store at {self._where()} failed: {failure}")

    def gone(self) -> bool:
        """Whether nothing listens at the store's address any more: its host process is gone, and with it every key it
        held (in memory). A store that merely does not answer (a frozen host, a partition) is not gone: what it holds
        may still be read. Asked for as long as a call (:meth:`until`)."""
        now = time.monotonic()
        try:
            socket.create_connection((self.address.host, self.address.port),
                                     timeout=self.until(now, self.deadline) - now).close()
        except ConnectionRefusedError:
            return True
        except OSError:
            return False
        return False

    def _connected(self) -> Any:
        connection = self._connection
        if connection.server is not None:
            return connection.server
        client = connection.client
        if client is None:
            moves, where = connection.moves, self._where()
            if self.gone():  # fail at once: the client would retry a dead address until its timeout
                raise StoreError(f"nothing listens at {where} any more")
            client = _connect(self.address, self.deadline)
            with connection.swap:  # a call abandoned while it connected must not bring a moved connection back
                if connection.moves != moves:
                    raise StoreError(f"connected to {where} after the node moved to another store")
                connection.client = client
        return client

    def _where(self) -> str:
        return f"{self.address.host}:{self.address.port}"


def _connect(address: StoreAddress, deadline: float, serving: bool = False) -> Any:
    """A client of the store at ``address`` (``serving``: its server, on a free port, and its own client), its calls
    bounded by ``deadline``. Connecting is tried :data:`CONNECT_TRIES` times within it: torch's client may miss the
    handshake's answer and wait out its whole timeout, where connecting again at once succeeds
    (docs/design-notes.md)."""
    from torch.distributed import TCPStore  # only here: a single-node uploader never loads torch

    for attempt in range(1, CONNECT_TRIES + 1):
        try:
            client = TCPStore(address.host, 0 if serving else address.port, is_master=serving,
                              wait_for_workers=False, timeout=timedelta(seconds=deadline / CONNECT_TRIES))
            break
        except RuntimeError as exc:  # (torch's DistNetworkError)
            if attempt == CONNECT_TRIES or "timed out" not in str(exc):
                raise
    client.set_timeout(timedelta(seconds=deadline))
    return client


def serve(near: StoreAddress) -> tuple[Any, StoreAddress]:
    """A store this process serves (a TCPStore on a free port, on every interface, as torch's own) and the address the
    job's nodes reach it at (this host's on its route to ``near``, the job's store). It stops when the server is
    dropped."""
    host = route_address(near)
    server = _connect(StoreAddress(host, 0, near.job_id), STORE_CALL_S, serving=True)
    return server, StoreAddress(host, int(server.port), near.job_id)


def route_address(near: StoreAddress) -> str:
    """This host's address on its route to ``near`` (no packet is sent)."""
    family, _, _, _, where = socket.getaddrinfo(near.host, near.port, type=socket.SOCK_DGRAM)[0]
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect(where)
        return str(probe.getsockname()[0])


def _check_size(key: str, value: bytes, largest: int = MAX_VALUE_BYTES) -> None:
    if len(value) > largest:
        raise StoreError(f"{key}: {len(value)} bytes is more than the {largest} a store value may hold here")


def raise_counter(store: CoordinationStore, key: str, count: int) -> int:
    """Raise the counter ``key`` in ``store`` to ``count`` where it is below (a counter only grows); its value."""
    if (have := store.add(key, 0)) < count:
        return store.add(key, count - have)
    return have
