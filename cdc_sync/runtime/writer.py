"""One thread that owns the target connection and runs jobs strictly in submission order."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor


class OrderedWriter:
    """Lets decoding overlap with target round trips (psycopg releases the GIL while waiting).

    Jobs run one at a time, in order, on a single thread, so the target transaction sees
    exactly the sequence a synchronous loop would produce. After the first failure the
    writer is poisoned: every later job raises that error instead of running. This matters
    for safety: PostgreSQL turns COMMIT of an aborted transaction into a silent ROLLBACK, so
    a commit job must never run after a failed job, or the source would be acked for
    changes that were never written.
    """

    def __init__(self, max_in_flight: int = 3) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cdc-sync-writer")
        self._in_flight: deque[Future[None]] = deque()
        self._max = max_in_flight
        self._failure: BaseException | None = None

    def submit(self, job: Callable[[], None]) -> Future[None]:
        """Queue a job; blocks while ``max_in_flight`` jobs wait (bounds memory)."""
        while len(self._in_flight) >= self._max:
            self._in_flight.popleft().result()
        self._reap()
        future = self._pool.submit(self._guarded, job)
        self._in_flight.append(future)
        return future

    def _guarded(self, job: Callable[[], None]) -> None:
        if self._failure is not None:
            raise self._failure
        try:
            job()
        except BaseException as e:
            self._failure = e
            raise

    def _reap(self) -> None:
        while self._in_flight and self._in_flight[0].done():
            self._in_flight.popleft().result()  # re-raises a job's failure here

    def check(self) -> None:
        """Raise a failure of a finished job, without waiting."""
        self._reap()

    def drain(self) -> None:
        """Wait for every queued job; raises the first failure."""
        while self._in_flight:
            self._in_flight.popleft().result()

    def close(self) -> None:
        """Let queued jobs finish (never abandon a job holding the connection), then stop."""
        self._pool.shutdown(wait=True)
