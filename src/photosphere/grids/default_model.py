"""The model a fit uses when the user names none: the shipped optical model where the spectrum
covers it, else the embedded grid.

The embedded grid (ATLAS9, one window 5050-5350 Å) was made for spectra of about that range; the
shipped optical model (:data:`~.load.SHIPPED_MODELS`, seven windows 4821-6610 Å: Hβ, Mg b,
Na D, Hα ...) is better on real stars wherever it sees enough of them (docs/benchmark.md). A
spectrum *covers* the optical model when its observed ranges (each order's or exposure's
stretches of good pixels, split at gaps) overlap at least :data:`MIN_WINDOWS` of the model's
windows, each by at least :data:`MIN_WINDOW_FRACTION` of the window's width. No
radial-velocity allowance is made: ±300 km/s moves an edge by 5-7 Å, small against the
half-widths (15-100 Å).

``photosphere fit FILE``, ``fit_many``, the benchmark's fit engine and ``photosphere.fit`` all
call :func:`choose_model`; the choice is written into the result (``provenance["model"]``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import MissingFileError
from ..ops.grid import log_uniform_runs
from .load import DATA_DIR, EMBEDDED_NAMES, SHIPPED_MODELS, load_grid_model

#: the shipped model that is the default where a spectrum covers it
OPTICAL = "optical"
#: the name the choice gives the embedded grid (``--grid embedded``, also ``grid``, ``default``)
EMBEDDED = EMBEDDED_NAMES[0]
#: windows of the optical model a spectrum must cover to be fitted with it
MIN_WINDOWS = 2
#: the fraction of a window's width (Å) the observed ranges must overlap for it to count
MIN_WINDOW_FRACTION = 0.5
#: windows of the optical model a spectrum covers for its σ_sys to hold (measured on spectra
#: covering 4 or more: infer.protocol.SYSTEMATIC_FLOOR); fewer: flagged ``partial_coverage``
FULL_COVERAGE_WINDOWS = 4


@dataclass(frozen=True)
class ModelChoice:
    """Which model a fit uses and why.

    name: ``"optical"`` or ``"embedded"``. reason: a short phrase for the terminal and the JSON.
    :attr:`argument`: what :func:`~.load.load_grid_model` is given (None: the embedded grid).
    covered, n_windows: the optical model's windows the spectrum covers, and its number of
    windows (None when the choice did not look at the spectrum).
    """

    name: str
    reason: str
    covered: int | None = None
    n_windows: int | None = None

    @property
    def partial_coverage(self) -> bool:
        """The optical model fits a spectrum covering fewer than
        :data:`FULL_COVERAGE_WINDOWS` of its windows (its σ_sys do not describe such fits)."""
        return (self.name == OPTICAL and self.covered is not None
                and self.covered < FULL_COVERAGE_WINDOWS)

    @property
    def argument(self) -> str | None:
        return None if self.name == EMBEDDED else self.name

    def describe(self) -> str:
        """``"optical (shipped emulator; covers 7 of its 7 windows)"``."""
        return f"{self.name} ({self.reason})"

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "reason": self.reason}
        if self.covered is not None:
            out.update(windows_covered=self.covered, windows=self.n_windows)
        return out


def optical_model_path() -> Path | None:
    """The shipped optical model's file, or None when this installation lacks it."""
    path = DATA_DIR / SHIPPED_MODELS[OPTICAL]
    return path if path.is_file() else None


@functools.cache
def _windows_of(path: str) -> tuple[tuple[float, float], ...]:
    with h5py.File(path, "r") as f:
        wave = np.asarray(f["wavelength"][:], float)
    _, runs = log_uniform_runs(wave)
    return tuple((float(wave[a]), float(wave[b - 1])) for a, b in runs)


def model_windows(path: str | Path) -> tuple[tuple[float, float], ...]:
    """``((lo, hi), ...)`` Å: the windows of the model file ``path`` (its wavelength grid's
    log-uniform runs, :func:`~photosphere.ops.grid.log_uniform_runs`), read once per file."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"model file {path} does not exist")
    return _windows_of(str(path.resolve()))


#: a stretch without good pixels wider than this many median pixel steps (and 1 Å) splits an
#: order's range in two (a spectrum merged from several settings, masked detector gaps). Coarser
#: than the networks' rule (``nn.inputs.GAP_STEPS``): this one decides which line windows a
#: spectrum covers, that one which layout pixels may be interpolated between two input pixels
GAP_STEPS = 20


def observed_ranges(spectrum) -> list[tuple[float, float]]:
    """``[(lo, hi), ...]`` Å: the stretches of good (unmasked, finite) pixels of each order of
    ``spectrum`` (a Spectrum, an EchelleSpectrum, or a list of them), from first to last pixel,
    split where no good pixel falls for more than :data:`GAP_STEPS` median steps and 1 Å;
    orders without a good pixel give none."""
    if isinstance(spectrum, list | tuple):
        return [r for s in spectrum for r in observed_ranges(s)]
    wave = np.atleast_2d(np.asarray(spectrum.wavelength, float))
    mask = spectrum.mask if spectrum.mask is not None else np.zeros(wave.shape, bool)
    good = np.atleast_2d(~np.asarray(mask, bool)) & np.isfinite(wave)
    out = []
    for w, ok in zip(wave, good, strict=True):
        w = np.sort(w[ok])
        if len(w) == 0:
            continue
        steps = np.diff(w)
        gap = max(1.0, GAP_STEPS * float(np.median(steps))) if len(steps) else np.inf
        cuts = np.flatnonzero(steps > gap)
        for a, b in zip(np.r_[0, cuts + 1], np.r_[cuts, len(w) - 1], strict=True):
            out.append((float(w[a]), float(w[b])))
    return out


def covered_windows(ranges: Sequence[tuple[float, float]],
                    windows: Sequence[tuple[float, float]],
                    fraction: float = MIN_WINDOW_FRACTION) -> int:
    """How many of ``windows`` (Å) the observed ``ranges`` (Å) overlap by at least ``fraction``
    of the window's width (overlapping ranges counted once)."""
    n = 0
    for lo, hi in windows:
        pieces = sorted((max(a, lo), min(b, hi)) for a, b in ranges if b > lo and a < hi)
        covered, end = 0.0, lo
        for a, b in pieces:
            a = max(a, end)
            if b > a:
                covered += b - a
                end = b
        n += covered >= fraction * (hi - lo)
    return n


def choose_model(spectrum, line_strengths: str | None = None) -> ModelChoice:
    """The model for ``spectrum`` when the user names none: the shipped optical model where
    this installation has it and the spectrum covers at least :data:`MIN_WINDOWS` of its
    windows (see the module docstring); else the embedded grid. ``line_strengths`` (a table of
    ``grid calibrate-lines``) corrects grid files only, so with it the grid is kept."""
    if line_strengths is not None:
        return ModelChoice(EMBEDDED, "default grid; --line-strengths corrects grid files")
    path = optical_model_path()
    if path is None:
        return ModelChoice(EMBEDDED, "default grid; this installation has no optical model")
    windows = model_windows(path)
    n = covered_windows(observed_ranges(spectrum), windows)
    if n >= MIN_WINDOWS:
        return ModelChoice(OPTICAL, f"shipped emulator; covers {n} of its {len(windows)} "
                                    "windows", n, len(windows))
    return ModelChoice(EMBEDDED, f"default grid; the spectrum covers {n} of the optical "
                                 f"model's {len(windows)} windows, {MIN_WINDOWS} needed",
                       n, len(windows))


def given_model(name: str | None) -> ModelChoice | None:
    """The choice for a model named by the user (``--grid NAME``, ``model="NAME"``), or None
    when ``name`` is None (then :func:`choose_model` decides per spectrum)."""
    if name is None:
        return None
    text = str(name)
    if text in EMBEDDED_NAMES and not Path(text).exists():
        return ModelChoice(EMBEDDED, f"given: {text}")
    return ModelChoice(text, "given")


def with_coverage(choice: ModelChoice, spectrum) -> ModelChoice:
    """``choice`` with the optical model's windows ``spectrum`` covers, when it names the
    shipped optical model and does not say yet (``--grid optical``), so that a spectrum with too
    few windows is flagged as when the model was chosen for it (unchanged without a spectrum)."""
    if choice.name != OPTICAL or choice.covered is not None or spectrum is None:
        return choice
    path = optical_model_path()
    if path is None:
        return choice
    windows = model_windows(path)
    n = covered_windows(observed_ranges(spectrum), windows)
    return dataclasses.replace(choice, covered=n, n_windows=len(windows))


@dataclass(frozen=True)
class ModelFactory:
    """The model of each fit of a command, chosen per spectrum: ``name`` as the user gave it
    (``--grid``), or None: :func:`choose_model`. ``loader``: ``(name, line_strengths) ->
    model`` (default :func:`~.load.load_grid_model`). Picklable (``fit_many`` sends it to its
    workers, which load each model once: :meth:`factory`)."""

    name: str | None = None
    line_strengths: str | None = None
    loader: Callable[[str | None, str | None], Any] | None = None

    def choose(self, spectrum) -> ModelChoice:
        given = given_model(self.name)
        if given is not None:
            return with_coverage(given, spectrum)
        return choose_model(spectrum, self.line_strengths)

    def factory(self, choice: ModelChoice) -> functools.partial:
        """A picklable zero-argument callable loading the model of ``choice``."""
        return functools.partial(self.loader or load_grid_model, choice.argument,
                                 self.line_strengths)
