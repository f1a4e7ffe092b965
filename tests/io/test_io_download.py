"""Downloaders against a local HTTP server on 127.0.0.1 (loopback only): caching, resume,
checksums, validation, and fast offline failure."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest
from io_fixtures import write_apstar, write_phoenix

from photosphere.errors import NetworkError, OutOfGridError
from photosphere.io import read_apstar, read_phoenix
from photosphere.io.download import (
    apstar_url,
    download,
    download_apstar,
    download_phoenix,
    phoenix_filename,
    phoenix_url,
    validate_fits,
)


class _Server:
    """Serves files from a folder; supports Range; can cut the first response short."""

    def __init__(self, root: Path):
        self.root = root
        self.requests: list[tuple[str, str | None]] = []
        self.cut_first_after: int | None = None
        self.honour_range = True
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                path = server.root / self.path.lstrip("/")
                if not path.is_file():
                    self.send_error(404, "Not Found")
                    return
                data = path.read_bytes()
                start = 0
                if rng and server.honour_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_first_after is not None:
                    self.wfile.write(body[: server.cut_first_after])
                    server.cut_first_after = None
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.02}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "server"
    root.mkdir()
    with _Server(root) as server:
        yield server


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_phoenix_download_cached_checked_and_readable(served, tmp_path):
    grid = served.root / "PHOENIX-ACES-AGSS-COND-2011" / "Z-0.0"
    grid.mkdir(parents=True)
    flux, wave, _, _ = write_phoenix(grid)
    (grid / wave.name).rename(served.root / wave.name)
    cache = tmp_path / "cache"
    flux_path, wave_path = download_phoenix(5800, 4.5, base_url=served.url, cache=cache)
    assert flux_path.read_bytes() == flux.read_bytes()
    assert (cache / (flux_path.name + ".sha256")).read_text().split()[0] == _sha(flux)
    assert not list(cache.glob("*.part"))
    assert read_phoenix(flux_path, wave_path).meta.extra["labels"]["teff"] == 5800.0
    n = len(served.requests)
    download_phoenix(5800, 4.5, base_url=served.url, cache=cache)
    assert len(served.requests) == n  # cache hit: no request


def test_interrupted_download_resumes_with_range(served, tmp_path):
    src = served.root / "apo25m" / "120+12"
    src.mkdir(parents=True)
    write_apstar(src / "apStar-dr17-2M00000002+7417074.fits", n_visits=2)
    original = (src / "apStar-dr17-2M00000002+7417074.fits").read_bytes()
    served.cut_first_after = len(original) // 3
    cache = tmp_path / "cache"
    with pytest.raises(NetworkError, match="call again to resume"):
        download_apstar("2M00000002+7417074", "120+12", base_url=served.url, cache=cache)
    part = cache / "apStar-dr17-2M00000002+7417074.fits.part"
    assert part.stat().st_size == len(original) // 3
    path = download_apstar("2M00000002+7417074", "120+12", base_url=served.url, cache=cache)
    assert served.requests[-1][1] == f"bytes={len(original) // 3}-"
    assert path.read_bytes() == original
    assert read_apstar(path).meta.extra["n_visits"] == 2


def test_server_ignoring_range_restarts_cleanly(served, tmp_path):
    (served.root / "f.bin").write_bytes(b"0123456789" * 100)
    served.honour_range = False
    dest = tmp_path / "f.bin"
    (tmp_path / "f.bin.part").write_bytes(b"stale")
    download(f"{served.url}/f.bin", dest)
    assert dest.read_bytes() == b"0123456789" * 100


def test_checksum_mismatch_deletes_the_download(served, tmp_path):
    (served.root / "f.bin").write_bytes(b"payload")
    dest = tmp_path / "f.bin"
    with pytest.raises(NetworkError, match="SHA-256"):
        download(f"{served.url}/f.bin", dest, sha256="0" * 64)
    assert not dest.exists() and not (tmp_path / "f.bin.part").exists()
    good = hashlib.sha256(b"payload").hexdigest()
    assert download(f"{served.url}/f.bin", dest, sha256=good).read_bytes() == b"payload"


def test_invalid_fits_download_is_rejected(served, tmp_path):
    (served.root / "x.fits").write_bytes(b"<html>not a fits file</html>")
    with pytest.raises(NetworkError, match="not valid"):
        download(f"{served.url}/x.fits", tmp_path / "x.fits", validate=validate_fits)
    assert not (tmp_path / "x.fits").exists()


def test_http_404_is_a_network_error(served, tmp_path):
    with pytest.raises(NetworkError, match="HTTP 404"):
        download(f"{served.url}/missing.fits", tmp_path / "m.fits")


def test_offline_fails_at_once_with_manual_instructions(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/apStar.fits"
    with pytest.raises(NetworkError) as info:
        download(url, tmp_path / "apStar.fits", connect_timeout=1.0)
    message = str(info.value)
    assert url in message and "unreachable" in message
    assert str(tmp_path / "apStar.fits") in message


def test_url_patterns():
    assert apstar_url("2M00000002+7417074", "120+12") == (
        "https://data.sdss.org/sas/dr17/apogee/spectro/redux/dr17/stars/apo25m/120+12/"
        "apStar-dr17-2M00000002+7417074.fits")
    assert phoenix_filename(5800, 4.5) == \
        "lte05800-4.50-0.0.PHOENIX-ACES-AGSS-COND-2011-HiRes.fits"
    assert phoenix_url(3500, 5.0, -1.0, 0.4).endswith(
        "PHOENIX-ACES-AGSS-COND-2011/Z-1.0.Alpha=+0.40/"
        "lte03500-5.00-1.0.Alpha=+0.40.PHOENIX-ACES-AGSS-COND-2011-HiRes.fits")
    assert "/Z+0.5/lte07200-3.00+0.5." in phoenix_url(7200, 3.0, 0.5)


def test_off_grid_phoenix_request_is_refused():
    with pytest.raises(OutOfGridError, match="teff=5850"):
        phoenix_filename(5850, 4.5)
    with pytest.raises(OutOfGridError, match=r"logg=4\.25"):
        phoenix_filename(5800, 4.25)
