"""A real HTTP server on loopback that serves real photographs and misbehaves on request.

Endpoints are plain functions of the request handler, registered by path. The server counts
requests per path, requests in flight per Host header and open connections, so tests can check
retries, per-host limits and connection reuse from the server's side.
"""

from __future__ import annotations

import io
import threading
import time
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import urlsplit

import pytest

Route = Callable[["Handler"], None]
HANG_LIMIT_S = 10.0     # a hanging endpoint gives up after this, whatever the test does


def photo(name: str, fmt: str, max_side: int = 96, cutout: bool = False) -> bytes:
    """A photograph bundled with scikit-image, shrunk and encoded as `fmt` (JPEG, PNG, ...).

    With `cutout`, everything outside a centred disc is made transparent (RGBA).
    """
    import numpy as np
    from PIL import Image
    from skimage import data

    image = Image.fromarray(getattr(data, name)())
    image.thumbnail((max_side, max_side))
    if cutout:
        rgba = np.asarray(image.convert("RGBA")).copy()
        h, w = rgba.shape[:2]
        yy, xx = np.mgrid[:h, :w]
        outside = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 > (min(h, w) / 3) ** 2
        rgba[outside, 3] = 0
        image = Image.fromarray(rgba, "RGBA")
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive, chunked encoding
    disable_nagle_algorithm = True  # headers and body go out at once, as real servers do
    server: "_Server"

    def log_message(self, format, *args):  # quiet
        pass

    def setup(self):
        tls = self.server.owner.tls
        if tls is not None:     # handshake here, in the connection's thread
            self.request = tls.wrap_socket(self.request, server_side=True)
        super().setup()
        self.server.owner._connections(+1)
        if self.server.owner.connect_delay:     # models TCP/TLS handshakes on a real network
            time.sleep(self.server.owner.connect_delay)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.owner._connections(-1)

    def do_GET(self):
        owner = self.server.owner
        path = urlsplit(self.path).path          # absolute-form targets arrive via a proxy
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
        owner._begin(path, host, self)
        try:
            route = owner.routes.get(path)
            if route is None:
                self.send_body(b"<html><body>Not Found</body></html>", "text/html", status=404)
            else:
                route(self)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            owner._end(host)

    def send_body(self, body: bytes, content_type: str | None = "image/jpeg", status: int = 200,
                  headers: dict | None = None) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128        # a real server does not drop connections at 5 pending
    owner: "ImageServer"

    def handle_error(self, request, client_address):
        import sys
        import ssl
        # Clients hanging up, or refusing the certificate, is what some tests are about.
        if not isinstance(sys.exc_info()[1], (ConnectionError, ssl.SSLError)):
            super().handle_error(request, client_address)


class ImageServer:
    """Serve on 127.0.0.1, an ephemeral port; `url(path)` builds the URL of an endpoint.

    With `tls` (a server-side SSLContext) it speaks HTTPS.
    """

    def __init__(self, tls=None):
        self.tls = tls
        self.connect_delay = 0.0            # seconds added to the start of each connection
        self.release = threading.Event()    # set to wake every hanging endpoint
        self._lock = threading.Lock()
        self.reset()
        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.httpd.owner = self
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{host}:{self.port}{path}"

    def reset(self) -> None:
        """Back to a fresh server: no endpoints, every counter at zero."""
        with self._lock:
            self.routes: dict[str, Route] = {}
            self.hits: Counter = Counter()
            self.times: dict[str, list[float]] = defaultdict(list)
            self.targets: list[str] = []
            self.host_headers: list[str] = []
            self.active: Counter = Counter()
            self.max_active: Counter = Counter()
            self.open_connections = 0
            self.max_open_connections = 0
            self.connections_opened = 0
            self.notes: dict[str, object] = {}

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- counters, called from handler threads ---------------------------------------------

    def _connections(self, delta: int) -> None:
        with self._lock:
            self.open_connections += delta
            if delta > 0:
                self.connections_opened += 1
            self.max_open_connections = max(self.max_open_connections, self.open_connections)

    def _begin(self, path: str, host: str, handler: Handler) -> None:
        with self._lock:
            self.hits[path] += 1
            self.times[path].append(time.monotonic())
            self.targets.append(handler.path)
            self.host_headers.append(handler.headers.get("Host") or "")
            self.active[host] += 1
            self.max_active[host] = max(self.max_active[host], self.active[host])

    def _end(self, host: str) -> None:
        with self._lock:
            self.active[host] -= 1


# -- endpoint factories ----------------------------------------------------------------------


def serve(body: bytes, content_type: str | None = "image/jpeg", delay: float = 0.0) -> Route:
    def route(h: Handler) -> None:
        if delay:
            time.sleep(delay)
        h.send_body(body, content_type)
    return route


def status(code: int, body: bytes = b"<html><body>error</body></html>",
           headers: dict | None = None) -> Route:
    return lambda h: h.send_body(body, "text/html", status=code, headers=headers)


def fail_then(times: int, code: int, then: Route, retry_after: str | None = None) -> Route:
    """Answer `code` the first `times` requests, then behave like `then`."""
    count = {"n": 0}
    lock = threading.Lock()

    def route(h: Handler) -> None:
        with lock:
            count["n"] += 1
            failing = count["n"] <= times
        if failing:
            headers = {"Retry-After": retry_after} if retry_after is not None else None
            h.send_body(b"busy", "text/plain", status=code, headers=headers)
        else:
            then(h)
    return route


def redirect(location: str, code: int = 302) -> Route:
    return lambda h: h.send_body(b"", None, status=code, headers={"Location": location})


def truncated(body: bytes, keep: int) -> Route:
    """Announce the whole body, send `keep` bytes of it, then close the connection."""
    def route(h: Handler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "image/jpeg")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body[:keep])
        h.wfile.flush()
        h.close_connection = True
    return route


def hang(release: threading.Event, body: bytes | None = None, send_first: int = 0) -> Route:
    """Stall: before the headers (body None) or after `send_first` bytes of `body`."""
    def route(h: Handler) -> None:
        if body is None:
            release.wait(HANG_LIMIT_S)
            h.close_connection = True
            return
        h.send_response(200)
        h.send_header("Content-Type", "image/jpeg")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body[:send_first])
        h.wfile.flush()
        release.wait(HANG_LIMIT_S)
        h.close_connection = True
    return route


def stream_chunked(total: int, notes: dict, key: str) -> Route:
    """A chunked body of `total` bytes with no Content-Length; notes[key] = bytes sent."""
    def route(h: Handler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "image/jpeg")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        sent, chunk = 0, b"\xff" * 65536
        notes[key] = 0
        try:
            while sent < total:
                h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
                notes[key] = sent
            h.wfile.write(b"0\r\n\r\n")
        finally:
            h.close_connection = True
    return route


@pytest.fixture(scope="module")
def server():
    """One loopback image server per test module."""
    image_server = ImageServer()
    yield image_server
    image_server.close()


@pytest.fixture
def srv(server):
    """The module's server, reset to a fresh state (no routes, no counts) for each test."""
    server.reset()
    return server
