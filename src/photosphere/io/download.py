"""Downloaders for APOGEE DR17 and PHOENIX-ACES files, into the photosphere cache.

Each file is fetched into ``<cache>/<product>/<name>.part`` with HTTP ``Range`` resume (an
interrupted download continues where it stopped on the next call), checked (SHA-256 against an
expected value when one is given; FITS files must open), then renamed into place in one step and
its SHA-256 written to a ``<name>.sha256`` sidecar. A file already in the cache is used as is.
Without network the call fails at once with a :class:`NetworkError` naming the URL and where to
put a manually downloaded copy. The cache root is ``$PHOTOSPHERE_CACHE`` (default
``~/.cache/photosphere``).
"""

from __future__ import annotations

import http.client
import os
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .._files import atomic_path, cache_dir, sha256_file
from ..errors import FileFormatError, NetworkError, OutOfGridError

APOGEE_DR17_STARS = "https://data.sdss.org/sas/dr17/apogee/spectro/redux/dr17/stars"
ALLSTAR_DR17_URL = ("https://data.sdss.org/sas/dr17/apogee/spectro/aspcap/dr17/synspec_rev1/"
                    "allStar-dr17-synspec_rev1.fits")
PHOENIX_HIRES = "https://phoenix.astro.physik.uni-goettingen.de/data/HiResFITS"
PHOENIX_GRID = "PHOENIX-ACES-AGSS-COND-2011"
PHOENIX_WAVE_NAME = f"WAVE_{PHOENIX_GRID}.fits"

#: Seconds to wait for the TCP connection before declaring the server unreachable (offline).
CONNECT_TIMEOUT = 3.0
#: Seconds to wait for data on an open connection.
DEFAULT_TIMEOUT = 30.0
_CHUNK = 1 << 20

# PHOENIX-ACES-AGSS-COND-2011 HiRes nodes (Husser et al. 2013, Table 2)
_PHOENIX_TEFF = np.concatenate([np.arange(2300, 7001, 100), np.arange(7200, 12001, 200)])
_PHOENIX_LOGG = np.arange(0.0, 6.01, 0.5)
_PHOENIX_FEH = np.array([-4.0, -3.0, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0])
_PHOENIX_ALPHA = np.round(np.arange(-0.2, 1.21, 0.2), 1)


# -------------------------------------------------------------------------------------- URLs
def apstar_url(apogee_id: str, field: str, telescope: str = "apo25m",
               base_url: str = APOGEE_DR17_STARS) -> str:
    """DR17 apStar URL: ``{base}/{telescope}/{field}/apStar-dr17-{apogee_id}.fits``."""
    return f"{base_url.rstrip('/')}/{telescope}/{field}/apStar-dr17-{apogee_id}.fits"


def _feh_text(feh: float) -> str:
    return "-0.0" if feh == 0 else f"{feh:+.1f}"


def _on_nodes(name: str, value: float, nodes: np.ndarray) -> float:
    if not np.any(np.isclose(nodes, value, atol=1e-6)):
        listed = ", ".join(f"{v:g}" for v in nodes[:12]) + (" ..." if nodes.size > 12 else "")
        raise OutOfGridError(f"{name}={value} is not a PHOENIX-ACES HiRes node; available: "
                             f"{nodes.min():g}..{nodes.max():g} ({listed}); pick a node or "
                             "interpolate between nodes")
    return float(nodes[np.argmin(np.abs(nodes - value))])


def phoenix_filename(teff: float, logg: float, feh: float = 0.0, alpha: float = 0.0) -> str:
    """e.g. ``lte05800-4.50-0.0.PHOENIX-ACES-AGSS-COND-2011-HiRes.fits`` (solar [M/H] is
    written ``-0.0``; a non-zero [α/M] adds ``.Alpha=+0.40``)."""
    teff = _on_nodes("teff", teff, _PHOENIX_TEFF)
    logg = _on_nodes("logg", logg, _PHOENIX_LOGG)
    feh = _on_nodes("feh", feh, _PHOENIX_FEH)
    alpha = _on_nodes("alpha", alpha, _PHOENIX_ALPHA)
    alpha_text = "" if alpha == 0 else f".Alpha={alpha:+.2f}"
    return f"lte{int(teff):05d}-{logg:.2f}{_feh_text(feh)}{alpha_text}.{PHOENIX_GRID}-HiRes.fits"


def phoenix_url(teff: float, logg: float, feh: float = 0.0, alpha: float = 0.0,
                base_url: str = PHOENIX_HIRES) -> str:
    """URL of a PHOENIX HiRes flux file: ``{base}/{grid}/Z{feh}[.Alpha={alpha}]/{file}``."""
    name = phoenix_filename(teff, logg, feh, alpha)
    folder = f"Z{_feh_text(feh)}" + ("" if alpha == 0 else f".Alpha={alpha:+.2f}")
    return f"{base_url.rstrip('/')}/{PHOENIX_GRID}/{folder}/{name}"


def phoenix_wave_url(base_url: str = PHOENIX_HIRES) -> str:
    return f"{base_url.rstrip('/')}/{PHOENIX_WAVE_NAME}"


# -------------------------------------------------------------------------------- downloading


def _sidecar(dest: Path) -> Path:
    return dest.with_name(dest.name + ".sha256")


def validate_fits(path: Path) -> None:
    """Raise FileFormatError unless ``path`` is a complete, readable FITS file."""
    from ._common import open_fits

    with open_fits(path):
        pass


def _offline(url: str, dest: Path, reason: object) -> NetworkError:
    return NetworkError(
        f"cannot download {url}: the network or server is unreachable ({reason}). If this "
        f"machine is offline, fetch the file elsewhere and place it at {dest} (photosphere uses "
        "it from there), or set PHOTOSPHERE_CACHE to a folder that already holds it")


def _check_reachable(url: str, dest: Path, connect_timeout: float) -> None:
    """Fail fast when the host cannot be reached (no network, DNS failure, refused port).

    Skipped when a proxy is configured for the scheme (the proxy makes the connection).
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise NetworkError(f"cannot download {url}: only http(s) URLs are supported")
    if parts.scheme in urllib.request.getproxies():
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=connect_timeout):
            pass
    except OSError as exc:
        raise _offline(url, dest, exc) from None


def _open(url: str, offset: int, dest: Path, timeout: float):
    headers = {"User-Agent": "photosphere"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            return None  # our partial file is already as long as the resource
        raise NetworkError(f"cannot download {url}: HTTP {exc.code} {exc.reason}; check the "
                           "URL (object id, field, telescope, grid node)") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise _offline(url, dest, reason) from None


def download(url: str, dest: str | os.PathLike, *, sha256: str | None = None,
             timeout: float = DEFAULT_TIMEOUT, connect_timeout: float = CONNECT_TIMEOUT,
             validate: Callable[[Path], None] | None = None) -> Path:
    """Download ``url`` to ``dest`` (resumable, checked, atomic); return ``dest``.

    sha256: expected hex digest (verified; a mismatch deletes the download and raises
    NetworkError). timeout: seconds to wait for data; connect_timeout: seconds to wait for the
    connection (offline machines fail after at most this). validate: called on the finished
    ``.part`` file before it is moved into place (e.g. :func:`validate_fits`). An existing
    ``dest`` is returned without a request (and checked against ``sha256`` when given).
    """
    dest = Path(dest)
    if dest.exists():
        if sha256 is not None and sha256_file(dest) != sha256.lower():
            raise NetworkError(f"{dest} is in the cache but its SHA-256 differs from the "
                               f"expected {sha256}; delete it to download again")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    _check_reachable(url, dest, connect_timeout)
    response = _open(url, offset, dest, timeout)
    if response is not None:
        with response:
            _stream(response, part, offset, url, dest)
    digest = sha256_file(part)
    if sha256 is not None and digest != sha256.lower():
        part.unlink()
        raise NetworkError(f"downloaded {url} but its SHA-256 {digest} differs from the "
                           f"expected {sha256}; the partial file was deleted, try again (if it "
                           "persists the server copy changed: pass the new checksum)")
    if validate is not None:
        try:
            validate(part)
        except FileFormatError as exc:
            part.unlink()
            raise NetworkError(f"downloaded {url} but the file is not valid ({exc}); it was "
                               "deleted, try again") from None
    os.replace(part, dest)
    with atomic_path(_sidecar(dest)) as tmp:
        tmp.write_text(f"{digest}  {dest.name}\n")
    return dest


def _stream(response, part: Path, offset: int, url: str, dest: Path) -> None:
    from tqdm import tqdm

    status = getattr(response, "status", 200)
    if offset and status != 206:  # server ignored the Range request: start over
        offset = 0
    length = response.headers.get("Content-Length")
    total = offset + int(length) if length is not None else None
    mode = "ab" if offset else "wb"
    written = offset
    try:
        with open(part, mode) as fh, tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                          desc=dest.name, file=sys.stderr, leave=False,
                                          disable=None) as bar:
            while True:
                chunk = response.read(_CHUNK)
                if not chunk:
                    break
                fh.write(chunk)
                written += len(chunk)
                bar.update(len(chunk))
    except (http.client.HTTPException, OSError, TimeoutError) as exc:
        raise NetworkError(f"download of {url} was interrupted after {written} bytes ({exc}); "
                           f"the partial file {part} is kept: call again to resume") from None
    if total is not None and written < total:
        raise NetworkError(f"download of {url} stopped at {written} of {total} bytes; the partial "
                           f"file {part} is kept: call again to resume")


# ----------------------------------------------------------------------------- product helpers
def download_apstar(apogee_id: str, field: str, telescope: str = "apo25m", *,
                    base_url: str = APOGEE_DR17_STARS, cache: str | os.PathLike | None = None,
                    **kwargs) -> Path:
    """Fetch a DR17 apStar file into ``<cache>/apogee/dr17/{telescope}/{field}/``."""
    url = apstar_url(apogee_id, field, telescope, base_url)
    folder = Path(cache) if cache is not None else cache_dir("apogee", "dr17", telescope, field)
    return download(url, folder / url.rsplit("/", 1)[1], validate=validate_fits, **kwargs)


def download_phoenix_wavelength(*, base_url: str = PHOENIX_HIRES,
                                cache: str | os.PathLike | None = None, **kwargs) -> Path:
    """Fetch ``WAVE_PHOENIX-ACES-AGSS-COND-2011.fits`` into ``<cache>/phoenix/``."""
    folder = Path(cache) if cache is not None else cache_dir("phoenix")
    return download(phoenix_wave_url(base_url), folder / PHOENIX_WAVE_NAME,
                    validate=validate_fits, **kwargs)


def download_phoenix(teff: float, logg: float, feh: float = 0.0, alpha: float = 0.0, *,
                     base_url: str = PHOENIX_HIRES, cache: str | os.PathLike | None = None,
                     **kwargs) -> tuple[Path, Path]:
    """Fetch one PHOENIX HiRes flux file and the WAVE file; returns (flux_path, wave_path),
    ready for :func:`photosphere.io.phoenix.read_phoenix`."""
    folder = Path(cache) if cache is not None else cache_dir("phoenix")
    flux = download(phoenix_url(teff, logg, feh, alpha, base_url),
                    folder / phoenix_filename(teff, logg, feh, alpha), validate=validate_fits,
                    **kwargs)
    wave = download_phoenix_wavelength(base_url=base_url, cache=folder, **kwargs)
    return flux, wave
