"""The image fetcher against a real HTTP server on loopback: content, redirects, failures,
retries, timeouts, size limits, per-host limits and connection reuse."""

from __future__ import annotations

import io
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import fetch_server as fs
from fetch_server import server, srv  # noqa: F401  (pytest fixtures)
from mrhp_prep.data.fetch import FetchJob, FetchResult, FetchSettings, Fetcher
from mrhp_prep.data.fetch_http import parse_retry_after

pytestmark = pytest.mark.timeout(60)

FAST = dict(workers=4, per_host=4, retries=2, backoff=0.01, max_backoff=0.05,
            connect_timeout=2.0, read_timeout=2.0)


@pytest.fixture(scope="module")
def photos():
    return {"astronaut.jpg": fs.photo("astronaut", "JPEG"),
            "coffee.png": fs.photo("coffee", "PNG"),
            "camera.png": fs.photo("camera", "PNG"),        # greyscale
            "cutout.png": fs.photo("chelsea", "PNG", cutout=True),  # RGBA, transparent corners
            "chelsea.webp": fs.photo("chelsea", "WEBP"),
            "rocket.jpg": fs.photo("rocket", "JPEG")}


def fetch(root: Path, urls: dict[str, str], **overrides):
    """Fetch {name: url} into root/name/pic_0.jpg; return (summary, {name: FetchResult})."""
    results: dict[str, FetchResult] = {}
    settings = FetchSettings(**{**FAST, **overrides})
    fetcher = Fetcher(settings, on_result=lambda r: results.__setitem__(r.job.image_id, r))
    jobs = [FetchJob(name, url, root / name / "pic_0.jpg") for name, url in urls.items()]
    return fetcher.run(jobs), results


def no_part_files(root: Path) -> bool:
    return not list(root.rglob("*.part"))


def test_jpeg_kept_byte_for_byte_and_other_formats_become_rgb_jpeg(srv, photos, tmp_path):
    for name, body in photos.items():
        ctype = "image/" + {"jpg": "jpeg"}.get(name.rsplit(".", 1)[1], name.rsplit(".", 1)[1])
        srv.routes[f"/img/{name}"] = fs.serve(body, ctype)
    summary, results = fetch(tmp_path, {n: srv.url(f"/img/{n}") for n in photos})

    assert summary.downloaded == len(photos) and summary.failed == 0
    assert summary.converted == 4
    for name, body in photos.items():
        dest = tmp_path / name / "pic_0.jpg"
        original = Image.open(io.BytesIO(body))
        with Image.open(dest) as stored:
            stored.load()
            assert stored.format == "JPEG"
            assert stored.size == original.size
            if original.format == "JPEG":
                assert dest.read_bytes() == body
            else:
                assert stored.mode == "RGB"
        assert results[name].num_bytes == len(body)
    # Transparent pixels are laid on white, not black.
    cutout = np.asarray(Image.open(io.BytesIO(photos["cutout.png"])))
    stored = np.asarray(Image.open(tmp_path / "cutout.png" / "pic_0.jpg"))
    clear = cutout[..., 3] == 0
    assert clear.any()
    assert stored[clear].mean() > 230
    assert stored[~clear].mean() < 200
    # Colours survive the conversion (PNG -> JPEG of the coffee photograph).
    coffee = np.asarray(Image.open(io.BytesIO(photos["coffee.png"])).convert("RGB"), float)
    stored = np.asarray(Image.open(tmp_path / "coffee.png" / "pic_0.jpg"), float)
    # JPEG at quality 95 is lossy, not a rounding: a few grey levels per pixel on average
    assert np.abs(coffee - stored).mean() < 6
    assert no_part_files(tmp_path)


def test_octet_stream_and_missing_content_type_are_accepted_when_the_body_decodes(
        srv, photos, tmp_path):
    srv.routes["/img/octet"] = fs.serve(photos["rocket.jpg"], "application/octet-stream")
    srv.routes["/img/untyped"] = fs.serve(photos["rocket.jpg"], None)
    summary, _ = fetch(tmp_path, {"octet": srv.url("/img/octet"),
                                  "untyped": srv.url("/img/untyped")})
    assert summary.downloaded == 2
    assert (tmp_path / "octet" / "pic_0.jpg").read_bytes() == photos["rocket.jpg"]


def test_redirect_chains_are_followed(srv, photos, tmp_path):
    srv.routes["/r/start"] = fs.redirect("/r/two", 301)
    srv.routes["/r/two"] = fs.redirect(srv.url("/r/three"), 302)     # absolute Location
    srv.routes["/r/three"] = fs.redirect("../img/final.jpg", 307)     # relative Location
    srv.routes["/img/final.jpg"] = fs.serve(photos["astronaut.jpg"])
    summary, _ = fetch(tmp_path, {"a": srv.url("/r/start")})
    assert summary.downloaded == 1
    assert (tmp_path / "a" / "pic_0.jpg").read_bytes() == photos["astronaut.jpg"]
    assert [srv.hits[p] for p in ("/r/start", "/r/two", "/r/three", "/img/final.jpg")] == [1] * 4


def test_redirect_loops_long_chains_and_scheme_jumps_are_refused(srv, photos, tmp_path):
    srv.routes["/loop/a"] = fs.redirect("/loop/b")
    srv.routes["/loop/b"] = fs.redirect("/loop/a")
    for i in range(8):
        srv.routes[f"/chain/{i}"] = fs.redirect(f"/chain/{i + 1}")
    srv.routes["/chain/8"] = fs.serve(photos["astronaut.jpg"])
    srv.routes["/to-file"] = fs.redirect("file:///etc/passwd")
    summary, results = fetch(tmp_path, {"loop": srv.url("/loop/a"),
                                        "chain": srv.url("/chain/0"),
                                        "file": srv.url("/to-file")}, max_redirects=5)
    assert summary.failed == 3
    assert results["loop"].reason.startswith("redirect loop")
    assert "too many redirects" in results["chain"].reason
    assert "unsupported URL scheme 'file'" in results["file"].reason
    # Not retried: a redirect problem does not pass with time.
    assert {r.job.attempts for r in results.values()} == {1}
    assert srv.hits["/chain/6"] == 0 and srv.hits["/chain/5"] == 1
    assert not list(tmp_path.rglob("pic_0.jpg")) and no_part_files(tmp_path)


def test_only_http_and_https_urls_are_fetched(srv, tmp_path):
    summary, results = fetch(tmp_path, {"file": "file:///etc/hostname",
                                        "ftp": "ftp://127.0.0.1/pic.jpg",
                                        "data": "data:image/png;base64,iVBORw0KGgo=",
                                        "empty": "",
                                        "nohost": "http:///pic.jpg"})
    assert summary.failed == 5 and summary.downloaded == 0
    assert "'file'" in results["file"].reason and "'ftp'" in results["ftp"].reason
    assert "'data'" in results["data"].reason
    assert results["empty"].reason == "empty URL"
    assert results["nohost"].reason == "URL has no host"
    assert {r.job.attempts for r in results.values()} == {0}
    assert sum(srv.hits.values()) == 0


def test_html_pages_and_text_are_rejected(srv, photos, tmp_path):
    page = b"<!DOCTYPE html><html><body>Sorry, this image is unavailable</body></html>"
    srv.routes["/html"] = fs.serve(page, "text/html; charset=utf-8")
    srv.routes["/html-as-jpeg"] = fs.serve(page, "image/jpeg")
    srv.routes["/text-as-jpeg"] = fs.serve(b"garbage " * 200, "image/jpeg")
    srv.routes["/json"] = fs.serve(b'{"error": "throttled"}', "application/json")
    summary, results = fetch(tmp_path, {n: srv.url(f"/{n}") for n in
                                        ("html", "html-as-jpeg", "text-as-jpeg", "json")})
    assert summary.failed == 4
    assert results["html"].reason == "content type 'text/html' is not an image"
    assert results["json"].reason == "content type 'application/json' is not an image"
    assert results["html-as-jpeg"].reason == "not an image: the body is an HTML page"
    assert results["text-as-jpeg"].reason == "not an image: the body is text"
    assert all(srv.hits[f"/{n}"] == 1 for n in results)      # wrong content is not retried
    assert not list(tmp_path.rglob("pic_0.jpg")) and no_part_files(tmp_path)


def test_truncated_bodies_are_retried_then_reported(srv, photos, tmp_path):
    body = photos["astronaut.jpg"]
    srv.routes["/cut"] = fs.truncated(body, len(body) // 2)
    # A complete transfer of a cut file: the length matches, the decoder notices.
    srv.routes["/cut-file"] = fs.serve(body[: len(body) * 2 // 3], "image/jpeg")
    summary, results = fetch(tmp_path, {"cut": srv.url("/cut"),
                                        "cut-file": srv.url("/cut-file")}, retries=2)
    assert summary.failed == 2
    assert results["cut"].reason == f"incomplete body: got {len(body) // 2} of {len(body)} bytes"
    assert results["cut"].job.attempts == 3 and srv.hits["/cut"] == 3
    assert results["cut-file"].reason.startswith("not a valid image (JPEG)")
    assert "truncated" in results["cut-file"].reason
    assert results["cut-file"].job.attempts == 1
    assert not list(tmp_path.rglob("pic_0.jpg")) and no_part_files(tmp_path)


def test_size_limit_stops_early(srv, photos, tmp_path):
    big = fs.photo("astronaut", "PNG", max_side=512)
    srv.routes["/big"] = fs.serve(big, "image/png")
    srv.routes["/endless"] = fs.stream_chunked(64 * 2**20, srv.notes, "endless")
    srv.routes["/small"] = fs.serve(photos["rocket.jpg"])
    limit = 50_000
    assert len(big) > limit > len(photos["rocket.jpg"])
    summary, results = fetch(tmp_path, {"big": srv.url("/big"), "endless": srv.url("/endless"),
                                        "small": srv.url("/small")}, max_bytes=limit)
    assert summary.downloaded == 1 and summary.failed == 2
    assert results["big"].reason == (f"Content-Length {len(big)} bytes exceeds the --max-bytes "
                                     f"limit ({limit})")
    assert results["endless"].reason.startswith(f"body exceeds the --max-bytes limit ({limit})")
    assert results["big"].job.attempts == 1 and results["endless"].job.attempts == 1
    # The client hung up long before the 64 MB were sent.
    deadline = time.monotonic() + 5
    while srv.active["127.0.0.1"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.notes["endless"] < 16 * 2**20


def test_client_errors_fail_at_once(srv, tmp_path):
    srv.routes["/gone"] = fs.status(410)
    srv.routes["/forbidden"] = fs.status(403)
    summary, results = fetch(tmp_path, {"missing": srv.url("/no/such/image.jpg"),
                                        "gone": srv.url("/gone"),
                                        "forbidden": srv.url("/forbidden")})
    assert summary.failed == 3
    assert results["missing"].reason == "HTTP 404 Not Found"
    assert results["missing"].http_status == 404
    assert results["gone"].http_status == 410 and results["forbidden"].http_status == 403
    assert {r.job.attempts for r in results.values()} == {1}


def test_server_errors_are_retried_until_they_pass(srv, photos, tmp_path):
    srv.routes["/flaky500"] = fs.fail_then(2, 500, fs.serve(photos["astronaut.jpg"]))
    srv.routes["/flaky502"] = fs.fail_then(1, 502, fs.serve(photos["rocket.jpg"]))
    srv.routes["/down"] = fs.fail_then(99, 500, fs.serve(photos["rocket.jpg"]))
    summary, results = fetch(tmp_path, {"a": srv.url("/flaky500"), "b": srv.url("/flaky502"),
                                        "c": srv.url("/down")}, retries=2)
    assert summary.downloaded == 2 and summary.failed == 1
    assert results["a"].job.attempts == 3 and srv.hits["/flaky500"] == 3
    assert results["b"].job.attempts == 2
    assert results["c"].reason == "HTTP 500 Internal Server Error"
    assert results["c"].job.attempts == 3 and srv.hits["/down"] == 3
    assert (tmp_path / "a" / "pic_0.jpg").read_bytes() == photos["astronaut.jpg"]


def test_back_off_grows_exponentially(srv, photos, tmp_path):
    srv.routes["/slowfix"] = fs.fail_then(3, 503, fs.serve(photos["rocket.jpg"]))
    summary, _ = fetch(tmp_path, {"a": srv.url("/slowfix")}, retries=3, backoff=0.1,
                       max_backoff=10)
    assert summary.downloaded == 1
    gaps = np.diff(srv.times["/slowfix"])
    # Delays are backoff * 2**n scaled by a jitter in [0.5, 1]: 0.05-0.1, 0.1-0.2, 0.2-0.4 s.
    for gap, base in zip(gaps, (0.1, 0.2, 0.4)):
        assert 0.5 * base - 0.01 <= gap <= base + 0.25


def test_retry_after_is_honoured_and_pauses_the_host(srv, photos, tmp_path):
    srv.routes["/busy"] = fs.fail_then(1, 429, fs.serve(photos["rocket.jpg"]), retry_after="1")
    srv.routes["/next1"] = fs.serve(photos["astronaut.jpg"])
    srv.routes["/next2"] = fs.serve(photos["astronaut.jpg"])
    summary, results = fetch(tmp_path, {"busy": srv.url("/busy"), "n1": srv.url("/next1"),
                                        "n2": srv.url("/next2")}, workers=1, per_host=1,
                             backoff=0.01)
    assert summary.downloaded == 3
    assert results["busy"].job.attempts == 2
    first = srv.times["/busy"][0]
    later = srv.times["/busy"][1:] + srv.times["/next1"] + srv.times["/next2"]
    assert min(later) - first >= 0.95      # nobody asked that host again within Retry-After


def test_retry_after_as_http_date_and_503(srv, photos, tmp_path):
    from email.utils import formatdate
    when = formatdate(time.time() + 2, usegmt=True)
    assert 0.5 < parse_retry_after(when) <= 2.0
    assert parse_retry_after("7") == 7.0 and parse_retry_after("soon") is None
    srv.routes["/maint"] = fs.fail_then(1, 503, fs.serve(photos["rocket.jpg"]), retry_after="1")
    summary, _ = fetch(tmp_path, {"a": srv.url("/maint")}, backoff=0.01)
    assert summary.downloaded == 1
    assert srv.times["/maint"][1] - srv.times["/maint"][0] >= 0.95


def test_retry_after_beyond_the_limit_fails_without_waiting(srv, photos, tmp_path):
    srv.routes["/later"] = fs.fail_then(5, 503, fs.serve(photos["rocket.jpg"]), retry_after="3600")
    started = time.monotonic()
    summary, results = fetch(tmp_path, {"a": srv.url("/later")}, max_retry_after=5)
    assert time.monotonic() - started < 3
    assert summary.failed == 1 and results["a"].job.attempts == 1
    assert "wait 3600s, more than --max-retry-after 5s" in results["a"].reason


def test_read_timeouts_before_the_headers_and_inside_the_body(srv, photos, tmp_path):
    import threading
    release = threading.Event()
    body = photos["astronaut.jpg"]
    srv.routes["/stall-headers"] = fs.hang(release)
    srv.routes["/stall-body"] = fs.hang(release, body, send_first=len(body) // 3)
    started = time.monotonic()
    try:
        summary, results = fetch(tmp_path, {"h": srv.url("/stall-headers"),
                                            "b": srv.url("/stall-body")},
                                 read_timeout=0.3, retries=1)
    finally:
        release.set()
    assert time.monotonic() - started < 3
    assert summary.failed == 2
    assert results["h"].reason == "read timed out after 0.3s waiting for the response"
    assert results["b"].reason.startswith("read timed out after 0.3s while receiving the body")
    assert results["h"].job.attempts == 2 and srv.hits["/stall-headers"] == 2
    assert not list(tmp_path.rglob("pic_0.jpg")) and no_part_files(tmp_path)


def test_refused_connections_are_retried_then_reported(tmp_path):
    with socket.socket() as sock:          # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    summary, results = fetch(tmp_path, {"a": f"http://127.0.0.1:{port}/pic.jpg"}, retries=2)
    assert summary.failed == 1
    assert results["a"].reason == f"connection refused by 127.0.0.1:{port}"
    assert results["a"].job.attempts == 3


def test_connect_timeout(tmp_path):
    # A listener that never accepts: once its queue holds one connection, new ones hang.
    with socket.socket() as listener, socket.socket() as filler:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        filler.connect(("127.0.0.1", port))
        started = time.monotonic()
        summary, results = fetch(tmp_path, {"a": f"http://127.0.0.1:{port}/pic.jpg"},
                                 connect_timeout=0.3, retries=1)
        elapsed = time.monotonic() - started
    assert summary.failed == 1
    assert results["a"].reason == f"connect to 127.0.0.1:{port} timed out after 0.3s"
    assert results["a"].job.attempts == 2
    assert elapsed < 2.5


def test_per_host_limit_is_respected(srv, photos, tmp_path):
    srv.routes["/slow.jpg"] = fs.serve(photos["rocket.jpg"], delay=0.15)
    urls = {f"ip{i}": srv.url(f"/slow.jpg?i={i}") for i in range(9)}
    urls.update({f"name{i}": srv.url(f"/slow.jpg?i={i}", host="localhost") for i in range(9)})
    summary, _ = fetch(tmp_path, urls, workers=8, per_host=3)
    assert summary.downloaded == 18
    assert srv.max_active["127.0.0.1"] == 3 and srv.max_active["localhost"] == 3
    # Both hosts were served at once, and idle kept-alive connections stay within the limit.
    assert srv.max_open_connections <= 6


def test_kept_alive_connections_are_reused(srv, photos, tmp_path):
    srv.routes["/k.jpg"] = fs.serve(photos["rocket.jpg"])
    summary, _ = fetch(tmp_path, {f"i{i}": srv.url(f"/k.jpg?i={i}") for i in range(10)},
                       workers=1, per_host=1)
    assert summary.downloaded == 10
    assert srv.connections_opened == 1


def test_http_proxy_from_the_environment(srv, photos, tmp_path, monkeypatch):
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{srv.port}")
    srv.routes["/images/I/photo.jpg"] = fs.serve(photos["astronaut.jpg"])
    summary, _ = fetch(tmp_path, {"a": "http://images.example.invalid/images/I/photo.jpg"})
    assert summary.downloaded == 1
    # The proxy got the absolute URL and the origin's Host; no name lookup happened here.
    assert srv.targets == ["http://images.example.invalid/images/I/photo.jpg"]
    assert srv.host_headers == ["images.example.invalid"]


def test_loopback_never_goes_through_a_proxy(srv, photos, tmp_path, monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{dead_port}")
    srv.routes["/direct.jpg"] = fs.serve(photos["rocket.jpg"])
    summary, _ = fetch(tmp_path, {"a": srv.url("/direct.jpg")})
    assert summary.downloaded == 1 and srv.targets == ["/direct.jpg"]


def test_urls_with_spaces_and_non_ascii_are_requested_quoted(srv, photos, tmp_path):
    srv.routes["/img/caf%C3%A9%20cup.jpg"] = fs.serve(photos["rocket.jpg"])
    summary, _ = fetch(tmp_path, {"a": srv.url("/img/café cup.jpg")})
    assert summary.downloaded == 1
    assert srv.targets == ["/img/caf%C3%A9%20cup.jpg"]


@pytest.fixture(scope="module")
def tls_server():
    import trustme   # the test extra installs it
    import ssl

    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    srv = fs.ImageServer(tls=context)
    srv.authority = authority
    yield srv
    srv.close()


def test_https_with_a_trusted_certificate(tls_server, photos, tmp_path, monkeypatch):
    tls_server.reset()
    bundle = tmp_path / "ca.pem"
    tls_server.authority.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    tls_server.routes["/s.jpg"] = fs.serve(photos["astronaut.jpg"])
    summary, _ = fetch(tmp_path, {f"i{i}": tls_server.url(f"/s.jpg?i={i}") for i in range(5)},
                       workers=1, per_host=1)
    assert summary.downloaded == 5
    assert (tmp_path / "i0" / "pic_0.jpg").read_bytes() == photos["astronaut.jpg"]
    assert tls_server.connections_opened == 1        # one handshake, five images


def test_https_with_an_untrusted_certificate_fails_at_once(tls_server, photos, tmp_path,
                                                          monkeypatch):
    tls_server.reset()
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    tls_server.routes["/s.jpg"] = fs.serve(photos["astronaut.jpg"])
    summary, results = fetch(tmp_path, {"a": tls_server.url("/s.jpg")})
    assert summary.failed == 1
    assert results["a"].reason.startswith("TLS certificate of 127.0.0.1 rejected")
    assert results["a"].job.attempts == 1 and tls_server.hits["/s.jpg"] == 0
