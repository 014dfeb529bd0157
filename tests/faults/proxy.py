"""A local TCP proxy for the fault suite: forwards, black-holes, then drops and recovers.

``blackhole()`` stops forwarding in both directions without closing anything: every socket
stays open and the proxy's kernel keeps acknowledging what it is sent, so neither side sees
a FIN or an RST, and TCP keepalive probes are answered (a peer that hangs, or a middlebox
that stops forwarding). New connections are accepted and left unanswered. ``recover()``
resets every connection that exists (RST) and forwards new ones normally again.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

_POLL_SECONDS = 0.05
_CHUNK = 65_536


@dataclass(eq=False)
class _Pair:
    client: socket.socket
    upstream: socket.socket | None
    closed: threading.Event = field(default_factory=threading.Event)


def _reset(sock: socket.socket) -> None:
    """Close with an RST (linger 0): the peer's next read fails at once."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class TcpProxy:
    """Listens on 127.0.0.1:``port`` and forwards each connection to ``upstream``."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(_POLL_SECONDS)
        self.port = int(self._listener.getsockname()[1])
        self._forwarding = threading.Event()
        self._forwarding.set()
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._pairs: list[_Pair] = []
        self.accepted = 0  # connections accepted in total
        self.accepted_while_blackholed = 0
        self.blackholed_at: float | None = None  # monotonic
        self._thread = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)
        self._thread.start()

    def dsn(self, direct_dsn: str) -> str:
        """``direct_dsn`` (postgresql://user@host:port/db) pointed at the proxy instead."""
        scheme, rest = direct_dsn.split("://", 1)
        userinfo, _, hostpath = rest.rpartition("@")
        _hostport, _, path = hostpath.partition("/")
        at = f"{userinfo}@" if userinfo else ""
        return f"{scheme}://{at}127.0.0.1:{self.port}/{path}"

    # -- modes ---------------------------------------------------------------------------------

    def blackhole(self) -> None:
        """Silently stop forwarding, both ways, on every connection (new ones included)."""
        self.blackholed_at = time.monotonic()
        self._forwarding.clear()

    def recover(self) -> None:
        """Reset every existing connection, then forward new ones normally again."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for p in pairs:
            self._drop(p)
        self.blackholed_at = None
        self._forwarding.set()

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._pairs)

    def close(self) -> None:
        self._closing.set()
        self._forwarding.set()  # wakes the pumps so they see the close
        self._thread.join(timeout=5)
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for p in pairs:
            self._drop(p)

    # -- threads -------------------------------------------------------------------------------

    def _drop(self, pair: _Pair) -> None:
        pair.closed.set()
        _reset(pair.client)
        if pair.upstream is not None:
            _reset(pair.upstream)

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.setblocking(True)
            self.accepted += 1
            if not self._forwarding.is_set():
                # Accepted by the kernel already: leave it unanswered, as a cut link would.
                self.accepted_while_blackholed += 1
                with self._lock:
                    self._pairs.append(_Pair(client, None))
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _reset(client)
                continue
            upstream.settimeout(None)
            pair = _Pair(client, upstream)
            with self._lock:
                self._pairs.append(pair)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=self._pump, args=(pair, src, dst), name="proxy-pump", daemon=True
                ).start()

    def _pump(self, pair: _Pair, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not pair.closed.is_set() and not self._closing.is_set():
                if not self._forwarding.is_set():
                    # Black hole: read nothing, send nothing, close nothing.
                    self._forwarding.wait(_POLL_SECONDS)
                    continue
                ready, _, _ = select.select([src], [], [], _POLL_SECONDS)
                if not ready or not self._forwarding.is_set():
                    continue
                data = src.recv(_CHUNK)
                if not data:
                    break
                dst.sendall(data)  # a chunk read just before a black hole still goes through
        except OSError:
            pass
        # One side ended (or was reset): end the other one too, as a plain proxy would.
        if not pair.closed.is_set():
            with self._lock:
                if pair in self._pairs:
                    self._pairs.remove(pair)
            self._drop(pair)
