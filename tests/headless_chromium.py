"""Headless Chromium driven over the DevTools protocol, with the standard library only: a
minimal WebSocket client (RFC 6455: client frames masked, server frames possibly fragmented)
and the few protocol calls the page tests need.

    with Browser.start(tmp_path / "profile") as browser:
        visit = browser.visit(path.as_uri())
        visit.requests, visit.console_errors        # what the page fetched and logged
        browser.attribute_values("section.product", "data-product-id")
        png = browser.screenshot()

Chromium listens on 127.0.0.1 only (a port it picks, read from DevToolsActivePort).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--mute-audio",
         "--disable-dev-shm-usage",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0"]


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class WebSocket:
    """A client WebSocket over a plain TCP connection (ws://, text messages)."""

    def __init__(self, url: str, timeout: float = 30.0):
        assert url.startswith("ws://"), url
        host_port, _, path = url[len("ws://"):].partition("/")
        host, _, port = host_port.partition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n")
        self.sock.sendall(request.encode())
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("the browser closed the connection during the handshake")
            response += chunk
        head, _, self.buffer = response.partition(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise ConnectionError(f"no WebSocket upgrade: {head[:200]!r}")

    def send(self, text: str) -> None:
        payload = text.encode()
        header = bytearray([0x81])                      # FIN, text frame
        if len(payload) < 126:
            header.append(0x80 | len(payload))
        elif len(payload) < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack(">H", len(payload))
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", len(payload))
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes(header) + mask + masked)

    def _read(self, count: int) -> bytes:
        while len(self.buffer) < count:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("the browser closed the connection")
            self.buffer += chunk
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def receive(self) -> str:
        """The next whole text message (fragments joined; pings answered)."""
        parts = []
        while True:
            first, second = self._read(2)
            opcode, final = first & 0x0F, bool(first & 0x80)
            length = second & 0x7F
            if length == 126:
                length = struct.unpack(">H", self._read(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self._read(8))[0]
            mask = self._read(4) if second & 0x80 else None
            payload = self._read(length)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x8:
                raise ConnectionError("the browser closed the WebSocket")
            if opcode == 0x9:                           # ping: answer with a pong
                self.sock.sendall(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
                continue
            parts.append(payload)
            if final:
                return b"".join(parts).decode()

    def close(self) -> None:
        self.sock.close()


@dataclass
class Visit:
    """What loading a page did: every request URL, console errors, uncaught exceptions and
    error log entries (CSP violations among them)."""

    url: str
    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)


class Browser:
    def __init__(self, process: subprocess.Popen, socket_: WebSocket, log_path: Path):
        self.process, self.ws, self.log_path = process, socket_, log_path
        self.next_id = 0
        self.events: list[dict] = []

    @classmethod
    def start(cls, profile: Path, width: int = 1200, height: int = 1600,
              timeout: float = 60.0) -> Browser:
        """Start Chromium with a new empty profile folder and attach to its blank page."""
        executable = chromium_path()
        if executable is None:
            raise FileNotFoundError("chromium is not installed")
        profile.mkdir(parents=True, exist_ok=False)
        log_path = profile.parent / f"{profile.name}-chromium.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [executable, *FLAGS, f"--user-data-dir={profile}",
                 f"--window-size={width},{height}", "about:blank"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        try:
            while not (port_file.is_file() and port_file.read_text().strip()):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("Chromium did not start: " + log_path.read_text()[-2000:])
                time.sleep(0.1)
            port = int(port_file.read_text().split()[0])
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                targets = json.load(r)
            page = next(t for t in targets if t["type"] == "page")
            browser = cls(process, WebSocket(page["webSocketDebuggerUrl"]), log_path)
        except BaseException:
            _stop(process)
            raise
        return browser

    def call(self, method: str, **params) -> dict:
        """Send one command and wait for its answer; events that arrive meanwhile are kept."""
        self.next_id += 1
        wanted = self.next_id
        self.ws.send(json.dumps({"id": wanted, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.receive())
            if message.get("id") == wanted:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def wait_for(self, event: str, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.events:
                if message["method"] == event:
                    return message
            message = json.loads(self.ws.receive())
            if "method" in message:
                self.events.append(message)
        raise TimeoutError(event)

    def visit(self, url: str, settle: float = 1.0) -> Visit:
        """Load `url` and record what it fetched and logged until `settle` seconds after
        the load event."""
        for domain in ("Network", "Runtime", "Log", "Page", "DOM"):
            self.call(f"{domain}.enable")
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")
        time.sleep(settle)
        self.call("Runtime.evaluate", expression="1")   # collect the events sent meanwhile
        visit = Visit(url)
        for message in self.events:
            method, params = message["method"], message.get("params", {})
            if method == "Network.requestWillBeSent":
                visit.requests.append(params["request"]["url"])
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error",
                                                                                   "assert"):
                visit.console_errors.append(json.dumps(params.get("args"))[:500])
            elif method == "Runtime.exceptionThrown":
                visit.console_errors.append(json.dumps(params)[:500])
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                visit.console_errors.append(params["entry"].get("text", "")[:500])
        return visit

    def attribute_values(self, selector: str, attribute: str) -> list[str]:
        """`attribute` of every element matching `selector`, in document order (DOM domain,
        no script in the page)."""
        root = self.call("DOM.getDocument", depth=0)["root"]["nodeId"]
        nodes = self.call("DOM.querySelectorAll", nodeId=root, selector=selector)["nodeIds"]
        values = []
        for node in nodes:
            flat = self.call("DOM.getAttributes", nodeId=node)["attributes"]
            values.append(dict(zip(flat[::2], flat[1::2])).get(attribute))
        return values

    def screenshot(self, selector: str | None = None) -> bytes:
        """PNG of the viewport, or of the first element matching `selector`."""
        params = {"format": "png"}
        if selector is not None:
            root = self.call("DOM.getDocument", depth=0)["root"]["nodeId"]
            node = self.call("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
            quad = self.call("DOM.getBoxModel", nodeId=node)["model"]["border"]
            xs, ys = quad[0::2], quad[1::2]
            params["clip"] = {"x": min(xs), "y": min(ys), "width": max(xs) - min(xs),
                              "height": max(ys) - min(ys), "scale": 1}
            params["captureBeyondViewport"] = True
        return base64.b64decode(self.call("Page.captureScreenshot", **params)["data"])

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            _stop(self.process)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _stop(process: subprocess.Popen) -> None:
    """End the Chromium this module started, with the helper processes of its session."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
