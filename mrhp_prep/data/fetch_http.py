"""One HTTP(S) GET of an image URL, with the limits a long crawl needs.

- separate connect and read timeouts (the read timeout applies to every wait on the socket);
- redirects followed by hand, so that a loop, an over-long chain or a jump to a non-web scheme
  (`file:`, `ftp:`) is refused with a clear reason;
- a byte limit enforced before the body (on Content-Length) and while streaming it;
- bodies announced as HTML, text or JSON are refused before they are read;
- proxies from the environment (`http_proxy`, `https_proxy`, `no_proxy`), never for loopback;
- kept-alive connections reused across downloads (a few idle ones per host).

Errors come back as `FetchError` with a reason a person can read and whether a retry may help.
"""

from __future__ import annotations

import base64
import email.utils
import http.client
import socket
import ssl
import threading
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import SplitResult, quote, unquote, urljoin, urlsplit

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Statuses worth another try later: overload, rate limits, gateway trouble.
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
# Media types that are not image/* but commonly carry images (object stores, old CDNs).
OPAQUE_TYPES = frozenset({"application/octet-stream", "binary/octet-stream"})
CHUNK_SIZE = 64 * 1024
# Bodies of redirects and error pages up to this size are read so the connection can be reused.
_DRAIN_LIMIT = 64 * 1024
_ACCEPT = "image/jpeg, image/png;q=0.9, image/*;q=0.8, */*;q=0.5"
# Characters left alone when a URL's path and query are re-quoted for the request line.
_URL_SAFE = "!#$%&'()*+,/:;=?@[]~"


class FetchError(Exception):
    """A download that did not succeed: `reason` for the report, `retryable` for the scheduler."""

    def __init__(self, reason: str, *, retryable: bool = False, status: int | None = None,
                 retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True)
class HttpSettings:
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    max_bytes: int = 20 * 2**20
    max_redirects: int = 5
    user_agent: str = "mrhp-prep"


@dataclass
class Download:
    """What one successful GET delivered into the sink."""

    url: str            # after redirects
    status: int
    content_type: str | None
    num_bytes: int
    redirects: int


def check_url(url: str) -> SplitResult:
    """Parse `url`; refuse anything but http/https with a host (not retryable)."""
    if not isinstance(url, str) or not url.strip():
        raise FetchError("empty URL")
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise FetchError(f"malformed URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        shown = parts.scheme or "none"
        raise FetchError(f"unsupported URL scheme '{shown}' (only http and https are fetched)")
    if not parts.hostname:
        raise FetchError("URL has no host")
    return parts


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None if absent."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def _is_loopback(host: str) -> bool:
    return host == "localhost" or host.startswith("127.") or host in ("::1", "0:0:0:0:0:0:0:1")


def _host_header(parts: SplitResult) -> str:
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return host if parts.port is None else f"{host}:{parts.port}"


def _request_target(parts: SplitResult, absolute: bool) -> str:
    """The request line's target, re-quoted so spaces and non-ASCII characters are legal."""
    path = quote(parts.path or "/", safe=_URL_SAFE)
    if parts.query:
        path += "?" + quote(parts.query, safe=_URL_SAFE)
    if absolute:
        return f"{parts.scheme}://{_host_header(parts)}{path}"
    return path


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def acceptable_content_type(content_type: str | None) -> bool:
    """image/*, the opaque binary types, or no header at all (the decoder decides then)."""
    if not content_type:
        return True
    media = _media_type(content_type)
    return media.startswith("image/") or media in OPAQUE_TYPES


@dataclass(frozen=True)
class _Proxy:
    host: str
    port: int
    authorization: str | None


class HttpClient:
    """Thread-safe GETs with a small pool of kept-alive connections per host."""

    def __init__(self, settings: HttpSettings, max_idle_per_host: int = 4):
        self.settings = settings
        self._max_idle = max_idle_per_host
        self._idle: dict[tuple, list[http.client.HTTPConnection]] = defaultdict(list)
        self._lock = threading.Lock()
        self._proxies = urllib.request.getproxies()
        self._tls = ssl.create_default_context()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, defaultdict(list)
        for conns in idle.values():
            for conn in conns:
                conn.close()

    # -- the public call ---------------------------------------------------------------------

    def get(self, url: str, sink: BinaryIO) -> Download:
        """GET `url`, following redirects, and write the body to `sink`.

        Raises FetchError. Errors from `sink.write` (a full disk) propagate as OSError.
        """
        visited = [url]
        current = url
        for _ in range(self.settings.max_redirects + 1):
            outcome = self._get_once(current, sink)
            if isinstance(outcome, Download):
                outcome.redirects = len(visited) - 1
                return outcome
            target = urljoin(current, outcome)
            if target in visited:
                loop = visited[visited.index(target):] + [target]
                raise FetchError("redirect loop: " + " -> ".join(loop))
            visited.append(target)
            current = target
        raise FetchError(f"too many redirects (more than {self.settings.max_redirects}) "
                         f"from {url}")

    # -- one request -------------------------------------------------------------------------

    def _get_once(self, url: str, sink: BinaryIO) -> Download | str:
        """One request: a Download, or the Location of a redirect."""
        parts = check_url(url)
        proxy = self._proxy_for(parts)
        key = (parts.scheme.lower(), parts.hostname, parts.port, proxy)
        reused = self._take(key)
        for conn in ([reused] if reused is not None else []) + [None]:
            fresh = conn is None
            if fresh:
                conn = self._connect(parts, proxy)
            try:
                self._send(conn, parts, proxy)
                response = conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    http.client.CannotSendRequest) as exc:
                conn.close()
                if not fresh:
                    continue    # the server dropped an idle kept-alive connection: reconnect
                raise FetchError(f"connection closed before a response: {exc}",
                                 retryable=True) from None
            except TimeoutError:
                conn.close()
                raise FetchError(f"read timed out after {self.settings.read_timeout:g}s "
                                 "waiting for the response", retryable=True) from None
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise FetchError(f"bad response: {type(exc).__name__}: {exc}",
                                 retryable=True) from None
            try:
                return self._receive(response, conn, key, url, sink)
            except BaseException:
                conn.close()
                raise
        raise AssertionError("unreachable")

    def _proxy_for(self, parts: SplitResult) -> _Proxy | None:
        host = parts.hostname or ""
        proxy_url = self._proxies.get(parts.scheme.lower())
        if not proxy_url or _is_loopback(host):
            return None
        if urllib.request.proxy_bypass_environment(host, self._proxies):
            return None
        proxy = urlsplit(proxy_url if "://" in proxy_url else "http://" + proxy_url)
        authorization = None
        if proxy.username is not None:
            token = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}"
            authorization = "Basic " + base64.b64encode(token.encode()).decode()
        return _Proxy(proxy.hostname or "", proxy.port or 8080, authorization)

    def _connect(self, parts: SplitResult, proxy: _Proxy | None) -> http.client.HTTPConnection:
        settings = self.settings
        host = parts.hostname or ""
        https = parts.scheme.lower() == "https"
        port = parts.port or (443 if https else 80)
        peer_host, peer_port = (proxy.host, proxy.port) if proxy else (host, port)
        if https:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                peer_host, peer_port, timeout=settings.connect_timeout, context=self._tls)
            if proxy:
                headers = ({"Proxy-Authorization": proxy.authorization}
                           if proxy.authorization else None)
                conn.set_tunnel(host, port, headers=headers)
        else:
            conn = http.client.HTTPConnection(peer_host, peer_port,
                                              timeout=settings.connect_timeout)
        where = f"{peer_host}:{peer_port}" + (" (proxy)" if proxy else "")
        try:
            conn.connect()
        except TimeoutError:
            conn.close()
            raise FetchError(f"connect to {where} timed out after {settings.connect_timeout:g}s",
                             retryable=True) from None
        except ConnectionRefusedError:
            conn.close()
            raise FetchError(f"connection refused by {where}", retryable=True) from None
        except socket.gaierror as exc:
            conn.close()
            raise FetchError(f"cannot resolve host {peer_host}: {exc.strerror or exc}",
                             retryable=True) from None
        except ssl.SSLCertVerificationError as exc:
            conn.close()
            raise FetchError(f"TLS certificate of {host} rejected: {exc.verify_message}") from None
        except ssl.SSLError as exc:
            conn.close()
            raise FetchError(f"TLS handshake with {host} failed: {exc.reason or exc}") from None
        except OSError as exc:
            conn.close()
            raise FetchError(f"cannot connect to {where}: {exc}", retryable=True) from None
        conn.sock.settimeout(settings.read_timeout)
        return conn

    def _send(self, conn: http.client.HTTPConnection, parts: SplitResult,
              proxy: _Proxy | None) -> None:
        via_http_proxy = proxy is not None and parts.scheme.lower() == "http"
        conn.putrequest("GET", _request_target(parts, absolute=via_http_proxy),
                        skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", _host_header(parts))
        conn.putheader("User-Agent", self.settings.user_agent)
        conn.putheader("Accept", _ACCEPT)
        if via_http_proxy and proxy.authorization:
            conn.putheader("Proxy-Authorization", proxy.authorization)
        conn.endheaders()

    def _receive(self, response: http.client.HTTPResponse, conn: http.client.HTTPConnection,
                 key: tuple, url: str, sink: BinaryIO) -> Download | str:
        settings = self.settings
        status = response.status
        if status in REDIRECT_STATUSES:
            location = response.getheader("Location")
            self._drain(response, conn, key)
            if not location:
                raise FetchError(f"HTTP {status} redirect without a Location header",
                                 status=status)
            return location.strip()
        if status != 200:
            retry_after = None
            if status in (429, 503):
                retry_after = parse_retry_after(response.getheader("Retry-After"))
            self._drain(response, conn, key)
            raise FetchError(f"HTTP {status} {response.reason}".rstrip(),
                             retryable=status in RETRYABLE_STATUSES, status=status,
                             retry_after=retry_after)

        content_type = response.getheader("Content-Type")
        if not acceptable_content_type(content_type):
            conn.close()
            raise FetchError(f"content type '{_media_type(content_type)}' is not an image",
                             status=status)
        length = _content_length(response)
        if length is not None and length > settings.max_bytes:
            conn.close()
            raise FetchError(f"Content-Length {length} bytes exceeds the --max-bytes limit "
                             f"({settings.max_bytes})", status=status)
        received = 0
        while True:
            try:
                chunk = response.read1(CHUNK_SIZE)   # whatever has arrived, up to a chunk
            except TimeoutError:
                raise FetchError(f"read timed out after {settings.read_timeout:g}s while "
                                 f"receiving the body ({received} bytes in)",
                                 retryable=True) from None
            except http.client.IncompleteRead as exc:
                raise FetchError(f"incomplete body: the connection closed after "
                                 f"{received + len(exc.partial)} bytes", retryable=True) from None
            except (OSError, http.client.HTTPException) as exc:
                raise FetchError(f"connection lost while receiving the body: {exc}",
                                 retryable=True) from None
            if not chunk:
                break
            received += len(chunk)
            if received > settings.max_bytes:
                raise FetchError(f"body exceeds the --max-bytes limit ({settings.max_bytes}); "
                                 f"stopped after {received} bytes", status=status)
            sink.write(chunk)
        if length is not None and received < length:
            raise FetchError(f"incomplete body: got {received} of {length} bytes",
                             retryable=True, status=status)
        if received == 0:
            raise FetchError("empty body", status=status)
        self._release(response, conn, key)
        return Download(url=url, status=status, content_type=content_type,
                        num_bytes=received, redirects=0)

    # -- connection reuse --------------------------------------------------------------------

    def _drain(self, response: http.client.HTTPResponse, conn: http.client.HTTPConnection,
               key: tuple) -> None:
        """Read a small unwanted body so the connection can be reused; close it otherwise."""
        length = _content_length(response)
        if length is None or length > _DRAIN_LIMIT:
            conn.close()
            return
        try:
            response.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            return
        self._release(response, conn, key)

    def _release(self, response: http.client.HTTPResponse, conn: http.client.HTTPConnection,
                 key: tuple) -> None:
        if response.will_close or conn.sock is None:
            conn.close()
            return
        if not response.isclosed():
            try:
                response.read()     # marks a fully received body as done (read1 does not)
            except (OSError, http.client.HTTPException):
                conn.close()
                return
        with self._lock:
            idle = self._idle[key]
            if len(idle) < self._max_idle:
                idle.append(conn)
                return
        conn.close()

    def _take(self, key: tuple) -> http.client.HTTPConnection | None:
        with self._lock:
            idle = self._idle.get(key)
            while idle:
                conn = idle.pop()
                if conn.sock is not None:
                    return conn
        return None


def _content_length(response: http.client.HTTPResponse) -> int | None:
    value = response.getheader("Content-Length")
    if value is None:
        return None
    try:
        length = int(value.strip())
    except ValueError:
        return None
    return length if length >= 0 else None
