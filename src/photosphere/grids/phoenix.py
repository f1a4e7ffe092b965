"""Convert PHOENIX-ACES HiRes spectra (Husser et al. 2013), as Starfish users have them, to a grid.

The PHOENIX layout: one wavelength file ``WAVE_PHOENIX-ACES-AGSS-COND-2011.fits`` (vacuum Å, primary
HDU) and one flux file per model,
``Z-0.0[.Alpha=+0.40]/lte05700-4.50-0.0[.Alpha=+0.40].PHOENIX-ACES-AGSS-COND-2011-HiRes.fits``, flux
in erg/s/cm²/cm in the primary HDU with labels in the header (``PHXTEFF``, ``PHXLOGG``,
``PHXM_H``, ``PHXALPHA``; the file name is used when they are absent).

Each model is converted to erg/s/cm²/Å, to air wavelengths when the grid is in air (vacuum ->
air by photosphere.ops.airvac, or the IAU/Morton 2000 formula), and rebinned flux-conservingly
onto the same log-uniform grid as synthetic grids. PHOENIX gives no continuum, so the stored
"continuum" is a pseudo-continuum: an upper envelope (maxima in ~``envelope_window`` Å bins, a
Chebyshev fit in ln flux with iterative rejection of bins below the fit, i.e. blanketed ones),
and the normalised flux is flux / envelope. Absolute flux and the mean flux per chunk do not
depend on that choice. (ops.continuum.fit_upper_envelope is made for noisy observations: it
clips at multiples of a noise level estimated from the data, which a noise-free model does not
have; on a test spectrum with 60 lines it sits 5 % off the continuum, this fit 1.4e-5.)
Label combinations without a file are stored as missing nodes.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from ..errors import FileFormatError, GridError, MissingFileError
from . import _sampling
from .presets import GridSpec
from .store import GridSampling, NodeResult, reduce_node, write_grid

WAVE_FILE = "WAVE_PHOENIX-ACES-AGSS-COND-2011.fits"
_NAME = re.compile(r"lte(?P<teff>\d+(?:\.\d+)?)(?P<logg>[-+]\d+(?:\.\d+)?)(?P<feh>[-+]\d+\.\d+)"
                   r"(?:\.Alpha=(?P<alpha>[-+]\d+\.\d+))?\.PHOENIX-ACES")
_HEADER = {"teff": "PHXTEFF", "logg": "PHXLOGG", "feh": "PHXM_H", "alpha": "PHXALPHA"}


def phoenix_file_name(teff: float, logg: float, feh: float, alpha: float = 0.0) -> str:
    """Relative path of a PHOENIX-ACES HiRes model, e.g. ``Z-0.0/lte05700-4.50-0.0.PHOENIX...``."""
    z = "-0.0" if feh == 0 else f"{feh:+.1f}"
    a = "" if alpha == 0 else f".Alpha={alpha:+.2f}"
    return (f"Z{z}{a}/lte{teff:05.0f}-{logg:.2f}{z}{a}"
            ".PHOENIX-ACES-AGSS-COND-2011-HiRes.fits")


def find_phoenix_files(root: str | Path) -> list[Path]:
    """Every PHOENIX-ACES HiRes flux file under ``root`` (recursively), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"PHOENIX directory {root} does not exist")
    files = sorted(p for p in root.rglob("lte*PHOENIX-ACES*HiRes.fits") if p.is_file())
    if not files:
        raise MissingFileError(f"no PHOENIX-ACES HiRes files (lte*.PHOENIX-ACES-*-HiRes.fits) "
                               f"under {root}")
    return files


def labels_from_name(path: str | Path) -> dict[str, float]:
    m = _NAME.search(Path(path).name)
    if m is None:
        raise FileFormatError(f"{path}: the name does not follow the PHOENIX scheme "
                              "lteTTTTT-G.GG-Z.Z[.Alpha=+A.AA].PHOENIX-ACES-...-HiRes.fits")
    return {"teff": float(m["teff"]), "logg": abs(float(m["logg"])), "feh": float(m["feh"]),
            "alpha": float(m["alpha"] or 0.0)}


def _labels(path: Path, header) -> dict[str, float]:
    """Labels from the header (PHX* keys), else from the file name; they must agree."""
    try:
        named = labels_from_name(path)
    except FileFormatError:
        named = None
    labels = dict(named or {})
    for name, key in _HEADER.items():
        if key in header:
            value = float(header[key])
            if named is not None and abs(value - named[name]) > 1e-3:
                raise FileFormatError(f"{path}: header {key}={value} disagrees with the file "
                                      f"name ({name}={named[name]})")
            labels[name] = value
    absent = [n for n in _HEADER if n not in labels]
    if absent:
        raise FileFormatError(f"{path}: no {', '.join(_HEADER[n] for n in absent)} in the header "
                              "and the name does not follow the PHOENIX scheme")
    return labels


def phoenix_labels(path: str | Path) -> dict[str, float]:
    """teff, logg, feh, alpha of a PHOENIX file (header keys, or its name)."""
    from astropy.io import fits

    try:
        header = fits.getheader(path)
    except (OSError, TypeError, ValueError) as exc:
        raise FileFormatError(f"{path} is not a readable PHOENIX FITS file ({exc})") from None
    return _labels(Path(path), header)


def read_phoenix(path: str | Path) -> tuple[dict[str, float], np.ndarray]:
    """Labels and flux (erg/s/cm²/Å, float64) of one PHOENIX HiRes file."""
    from astropy.io import fits

    try:
        with fits.open(path, memmap=False) as hdul:
            header = hdul[0].header
            flux = np.asarray(hdul[0].data, dtype=np.float64) * 1e-8  # per cm -> per Å
    except (OSError, TypeError, ValueError) as exc:
        raise FileFormatError(f"{path} is not a readable PHOENIX FITS file ({exc})") from None
    if flux.ndim != 1:
        raise FileFormatError(f"{path}: expected a 1D flux array, got shape {flux.shape}")
    return _labels(Path(path), header), flux


def read_phoenix_wavelength(path: str | Path) -> np.ndarray:
    """The PHOENIX wavelength file: (n,) vacuum Å."""
    from astropy.io import fits

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"PHOENIX wavelength file {path} does not exist; pass wave_file=")
    try:
        with fits.open(path, memmap=False) as hdul:
            return np.asarray(hdul[0].data, dtype=np.float64)
    except (OSError, TypeError, ValueError) as exc:
        raise FileFormatError(f"{path} is not a readable PHOENIX wavelength file ({exc})") \
            from None


def upper_envelope(wavelength: np.ndarray, flux: np.ndarray, window: float = 2.0,
                   degree: int | None = None, n_iter: int = 8) -> np.ndarray:
    """Smooth upper envelope of ``flux`` (same shape): Chebyshev fit in ln flux to bin maxima.

    window: bin width (Å); degree: default one per ~25 Å, at most 12. Bins more than 2σ below
    the fit are rejected and the fit repeated, so dense line blanketing does not pull it down.
    """
    edges = np.arange(wavelength[0], wavelength[-1] + window, window)
    which = np.clip(np.searchsorted(edges, wavelength, side="right") - 1, 0, edges.size - 2)
    keys = np.unique(which)
    idx = np.array([np.flatnonzero(which == k)[np.argmax(flux[which == k])] for k in keys])
    x_all = np.interp(wavelength, [wavelength[0], wavelength[-1]], [-1.0, 1.0])
    x, y = x_all[idx], np.log(flux[idx])
    if degree is None:
        degree = int(np.clip((wavelength[-1] - wavelength[0]) / 25.0, 1, 12))
    degree = min(degree, max(idx.size - 1, 0))
    keep = np.ones(idx.size, bool)
    for _ in range(n_iter):
        coef = np.polynomial.chebyshev.chebfit(x[keep], y[keep], degree)
        resid = y - np.polynomial.chebyshev.chebval(x, coef)
        sigma = np.std(resid[keep])
        new = resid > -2.0 * sigma
        if np.array_equal(new, keep) or new.sum() <= degree + 1:
            break
        keep = new
    # lift the fit to the upper envelope of the kept maxima
    coef[0] += max(float(np.max(resid[keep])), 0.0)
    return np.exp(np.polynomial.chebyshev.chebval(x_all, coef))


def _spec_for(files: list[Path], labels: list[dict[str, float]], wavelength_min: float,
              wavelength_max: float, velocity_step: float, medium: str, step: float,
              **kw) -> GridSpec:
    axes, fixed = {}, {}
    for name in ("teff", "logg", "feh", "alpha"):
        values = sorted({round(lab[name], 6) for lab in labels})
        if len(values) > 1:
            axes[name] = tuple(values)
        else:
            fixed[name] = values[0]
    if not axes:
        raise GridError(f"the {len(files)} PHOENIX file(s) are all the same model; a grid needs "
                        "at least two values of one label")
    return GridSpec(name="phoenix-aces", axes=axes, fixed=fixed, wavelength_min=wavelength_min,
                    wavelength_max=wavelength_max, velocity_step=velocity_step, medium=medium,
                    atmosphere="phoenix-aces", synthesis_step=step, **kw)


def ingest_phoenix(source: str | Path | Iterable[str | Path], output: str | Path, *,
                   wavelength_min: float, wavelength_max: float,
                   wave_file: str | Path | None = None,
                   velocity_step: float = 1.0, medium: str = "air", n_chunks: int = 8,
                   continuum_stride: int = 64, flux_encoding: str = "float32",
                   envelope_window: float = 2.0, overwrite: bool = False,
                   progress: bool = True) -> Path:
    """Convert PHOENIX-ACES HiRes files into a photosphere grid file (written atomically).

    source: the PHOENIX root directory (searched recursively) or a list of flux files.
    wave_file: the WAVE_ file (default: found beside/under the source). wavelength_min/max: Å in
    ``medium`` ("air" converts PHOENIX's vacuum wavelengths). Returns the output path.
    """
    from tqdm import tqdm

    output = Path(output)
    if output.exists() and not overwrite:
        raise GridError(f"{output} already exists; pass overwrite=True (--overwrite) or choose "
                        "another output path")
    if isinstance(source, str | Path):
        root = Path(source)
        files = find_phoenix_files(root)
        if wave_file is None:
            found = list(root.rglob(WAVE_FILE)) or list(root.parent.glob(WAVE_FILE))
            if not found:
                raise MissingFileError(f"no {WAVE_FILE} under {root}; pass wave_file=")
            wave_file = found[0]
    else:
        files = [Path(f) for f in source]
        if wave_file is None:
            raise MissingFileError("pass wave_file= (the WAVE_PHOENIX-...fits file) with a list "
                                   "of PHOENIX files")
    wave = read_phoenix_wavelength(wave_file)
    if medium == "air":
        wave = _sampling.vacuum_to_air(wave)
    lo, hi = wavelength_min - 1.0, wavelength_max + 1.0
    if wave[0] > lo or wave[-1] < hi:
        raise GridError(f"the PHOENIX wavelengths ({wave[0]:.1f}-{wave[-1]:.1f} Å {medium}) do "
                        f"not cover {wavelength_min}-{wavelength_max} Å; choose a range inside")
    cut = np.flatnonzero((wave >= lo) & (wave <= hi))
    sel = slice(max(cut[0] - 1, 0), cut[-1] + 2)
    labels = [phoenix_labels(f) for f in files]
    spec = _spec_for(files, labels, wavelength_min, wavelength_max, velocity_step, medium,
                     float(np.median(np.diff(wave[sel]))), n_chunks=n_chunks,
                     continuum_stride=continuum_stride, flux_encoding=flux_encoding)
    sampling = GridSampling.from_spec(spec)
    by_node: dict[int, Path] = {}
    for f, lab in zip(files, labels, strict=True):
        idx = tuple(spec.axes[n].index(round(lab[n], 6)) for n in spec.label_names)
        by_node[int(np.ravel_multi_index(idx, spec.shape))] = f

    def nodes() -> Iterator[NodeResult]:
        bar = tqdm(range(spec.n_nodes), desc="PHOENIX ingest", unit="model", file=sys.stderr,
                   disable=not progress)
        for i in bar:
            if i not in by_node:
                yield NodeResult(index=i, missing=True, atmosphere_id="none: no PHOENIX file")
                continue
            path = by_node[i]
            _, flux = read_phoenix(path)
            if flux.size != wave.size:
                raise FileFormatError(f"{path} has {flux.size} flux values but the wavelength "
                                      f"file has {wave.size}; they are from different products")
            absolute = _sampling.rebin(wave[sel], flux[sel], sampling.wavelength)
            envelope = upper_envelope(sampling.wavelength, absolute, window=envelope_window)
            yield reduce_node(i, sampling, sampling.wavelength, absolute / envelope, envelope,
                              atmosphere_id=path.name,
                              provenance={"source": "PHOENIX-ACES-AGSS-COND-2011 HiRes"})

    provenance = {"code_version": _code_version(), "atmosphere_family": "phoenix-aces",
                  "linelist_sha256": "", "source_files": len(files),
                  "wave_file": str(wave_file), "continuum": "upper envelope (pseudo-continuum)",
                  "command": " ".join(sys.argv), "created": _now()}
    return write_grid(output, spec, nodes(), provenance)


def _code_version() -> str:
    from .._version import __version__

    return f"photosphere {__version__}"


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
