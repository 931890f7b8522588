"""Pointing Leap0's unmodified SDK at a test server without touching the host's name resolution.

The SDK reaches a sandbox only at ``https://{id}.{sandbox_domain}`` (the scheme is hard-coded),
through the system resolver. So the test makes what an operator would (``docs/LEAP0.md``): a CA
of its own and a wildcard certificate for ``*.{domain}`` (and 127.0.0.1, the control plane's
address), served by the server itself (``--tls-cert``/``--tls-key``). The names reach the
server through :class:`ConnectProxy`, an HTTP CONNECT proxy that tunnels ``{id}.{domain}:443``
as plain TCP to the server's port, named to the SDK by ``HTTPS_PROXY``; TLS runs end to end
between the SDK and the server, exactly as without the proxy.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
from pathlib import Path

from tests.serverproc import Tls

#: The most a CONNECT request's head may take.
MAX_HEAD = 16 * 1024


def make_certificates(directory: Path, domain: str) -> Tls:
    """A throw-away CA, and a certificate it signed for ``*.{domain}`` and 127.0.0.1."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=Sandcastle test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", f"/CN=*.{domain}",
    )  # fmt: skip
    (directory / "server.ext").write_text(
        f"subjectAltName=DNS:*.{domain},IP:127.0.0.1\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid\n"
    )
    openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "1", "-extfile", "server.ext", "-out", "server.pem",
    )  # fmt: skip
    return Tls(cert=directory / "server.pem", key=directory / "server.key", ca=directory / "ca.pem")


class ConnectProxy:
    """CONNECT ``*.{domain}:443`` → a TCP tunnel to 127.0.0.1:``port``; anything else is 403.

    One thread accepts; each tunnel runs two threads, one per direction. Everything is closed
    by :meth:`close` (or the ``with`` block).
    """

    def __init__(self, domain: str, port: int) -> None:
        self.suffix = "." + domain
        self.target = ("127.0.0.1", port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        #: Every CONNECT target asked for, tunnelled or refused.
        self.asked: list[str] = []
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._acceptor = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> ConnectProxy:
        self._acceptor.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()
        self._acceptor.join(5)

    def _keep(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._sockets.append(sock)
        return sock

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._tunnel, args=(self._keep(client),), daemon=True).start()

    def _tunnel(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head and len(head) < MAX_HEAD:
            chunk = client.recv(4096)
            if not chunk:
                client.close()
                return
            head += chunk
        head, _, early = head.partition(b"\r\n\r\n")
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
        method, target = (parts[0], parts[1]) if len(parts) == 3 else ("", "")
        self.asked.append(target)
        host, _, port = target.rpartition(":")
        if method != "CONNECT" or port != "443" or not host.lower().endswith(self.suffix):
            client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            client.close()
            return
        upstream = self._keep(socket.create_connection(self.target))
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        if early:
            upstream.sendall(early)
        threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()
        _pump(client, upstream)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy until ``source`` ends, then end ``sink``'s writing half too."""
    try:
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    except OSError:
        pass  # one side closed: the tunnel is over
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)
