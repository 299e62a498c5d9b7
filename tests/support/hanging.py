"""A stuck endpoint on loopback: accepts TCP connections and never answers, until told to recover.

For tests of what a client does when its server hangs (timeouts, StorageUnavailable), and of what it does once
the server answers again (``recover``: from then on every new connection is relayed to a real server, such as
the moto S3 server, and the held ones are closed, so the client's next attempt gets through).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from urllib.parse import urlparse

from tests.support.ports import LOOPBACK


class HangingServer:
    """Accepts TCP connections on loopback and never answers (a stuck S3 endpoint); counts the attempts."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind((LOOPBACK, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.accepted: list[socket.socket] = []  # the connections held while hanging
        self._target: tuple[str, int] | None = None
        self._relayed: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self._target is None:
                self.accepted.append(conn)  # held open, never read from nor written to
            else:
                self._relay(conn, self._target)

    def recover(self, target_url: str) -> None:
        """From now on, relay every new connection to ``target_url`` (http://host:port); drop the held ones."""
        parsed = urlparse(target_url)
        self._target = (parsed.hostname or LOOPBACK, parsed.port or 80)
        for conn in self.accepted:
            conn.close()

    def _relay(self, conn: socket.socket, target: tuple[str, int]) -> None:
        try:
            upstream = socket.create_connection(target, timeout=10)
        except OSError:
            conn.close()
            return
        upstream.settimeout(None)
        self._relayed += [conn, upstream]
        for src, dst in ((conn, upstream), (upstream, conn)):
            threading.Thread(target=_pump, args=(src, dst), daemon=True).start()

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted + self._relayed:
            conn.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Copies ``src`` to ``dst`` until ``src`` ends, then ends ``dst``'s writing side (half-close, as TCP does)."""
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)
