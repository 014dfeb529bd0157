"""Stop signals: the first asks the loop to drain and exit, the second exits at once."""

from __future__ import annotations

import os
import signal
import threading
import time
from types import FrameType

# How long a stop waits for the open source transaction (pipeline loop) or for a running
# target statement (target_watch) before it rolls back / cancels: the checkpoint stays before
# whatever was cut, so it is read again on the next start.
STOP_GRACE_SECONDS = 5.0


class StopFlag:
    """Set by SIGTERM/SIGINT; the pipeline loop polls it between events."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.requested_at: float | None = None

    def request(self) -> None:
        if self.requested_at is None:
            self.requested_at = time.monotonic()
        self._event.set()

    @property
    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        return self._event.wait(seconds)

    def install(self) -> None:
        def handler(signum: int, _frame: FrameType | None) -> None:
            if self.is_set:
                # Second signal: leave now. The checkpoint in the target is the truth, so
                # whatever was not committed is simply read again on the next start.
                os._exit(128 + signum)
            self.request()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
