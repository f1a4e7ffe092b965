"""Clone a high-resolution normalised spectrum into individual lines (blasé's pre-training).

:func:`clone_spectrum` finds the lines (:func:`.detect.find_lines`), builds a :class:`LineModel`
and optimises every line's centre, opacity area, σ and γ against the spectrum on its own pixels
until the residual is small. Works on a noise-free synthetic spectrum (the intended use) and on an
observed one (then the clone is a deconvolution into lines).

Optimisers: Adam with per-group learning rates and cosine decay (``"adam"``, the default; the
only one for the exact Voigt profile) or Levenberg–Marquardt on the sparse analytic Jacobian
(``"lm"``, :mod:`.jacobian`; fewer, costlier steps, see docs/lines.md). L-BFGS
(strong-Wolfe line search) was measured on the same problems and stalls or diverges.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from ...errors import ModelError
from .detect import LineGuess, check_normalised_spectrum, find_lines
from .jacobian import refine_lines
from .model import LineModel

OPTIMIZERS = ("lm", "adam")
_NOMINAL_ERROR = 1e-3


@dataclass(frozen=True)
class ResidualStats:
    """Residual (data − model) statistics per pixel, normalised flux units."""

    median_abs: float
    rms: float
    p95_abs: float
    max_abs: float

    @classmethod
    def of(cls, residual: np.ndarray) -> ResidualStats:
        a = np.abs(residual)
        return cls(median_abs=float(np.median(a)), rms=float(np.sqrt(np.mean(residual**2))),
                   p95_abs=float(np.percentile(a, 95)), max_abs=float(a.max()))

    def as_dict(self) -> dict[str, float]:
        return {"median_abs": self.median_abs, "rms": self.rms, "p95_abs": self.p95_abs,
                "max_abs": self.max_abs}


@dataclass
class CloneResult:
    """A cloned spectrum: the fitted ``model``, the first guesses, residual stats before/after,
    the loss per step (``history``) and the wall time (s)."""

    model: LineModel
    guess: LineGuess
    initial: ResidualStats
    final: ResidualStats
    history: list[float] = field(default_factory=list)
    seconds: float = 0.0
    optimizer: str = "adam"

    def summary(self) -> dict:
        return {"n_lines": self.model.n_lines, "optimizer": self.optimizer,
                "steps": len(self.history), "seconds": self.seconds,
                "residual_initial": self.initial.as_dict(),
                "residual_final": self.final.as_dict(),
                "wavelength_range": list(self.model.wavelength_range),
                "profile": self.model.profile,
                "half_window_median": float(self.model.half_window.median())}


def optimise(loss_fn, model: torch.nn.Module, *, optimizer: str, n_steps: int,
             learning_rate: float = 0.05, groups: list[dict] | None = None,
             progress: bool = True, description: str = "fit") -> list[float]:
    """Minimise ``loss_fn()`` over ``model``'s trainable parameters; returns the loss history.

    Adam with cosine learning-rate decay; ``n_steps`` epochs. ``groups`` overrides the default
    parameter groups (line centre shifts at 2 % of ``learning_rate``, the rest at it).
    ``optimizer`` must be ``"adam"`` here (the clone's ``"lm"`` works on line models only,
    :func:`.jacobian.refine_lines`).
    """
    if optimizer != "adam":
        raise ModelError(f"optimizer={optimizer!r} is not known here; use 'adam'")
    history: list[float] = []
    bar = tqdm(total=n_steps, desc=description, disable=not progress, leave=False)
    if groups is None:
        groups = [{"params": [p], "lr": learning_rate * (0.02 if "shift" in name else 1.0)}
                  for name, p in model.named_parameters() if p.requires_grad]
    opt = torch.optim.Adam(groups)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=n_steps)
    for _ in range(n_steps):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
        sched.step()
        history.append(float(loss.detach()))
        bar.update(1)
    bar.close()
    return history


def _merge(model: LineModel, extra: LineGuess, profile: str, half_window,
           wavelength_range) -> LineModel:
    """A new model holding ``model``'s current lines plus the ``extra`` guesses."""
    p = model.parameters_numpy()
    order = np.argsort(np.concatenate([p["centre"], extra.centre]))
    cat = {k: np.concatenate([p[k], getattr(extra, k)])[order]
           for k in ("centre", "amplitude", "sigma", "gamma")}
    return LineModel(cat["centre"], cat["amplitude"], cat["sigma"], cat["gamma"],
                     half_window=half_window, profile=profile,
                     wavelength_range=wavelength_range).to(model.reference_centre.device)


def clone_spectrum(wavelength, flux, *, prominence: float = 0.005, half_window=None,
                   profile: str = "pseudo_voigt", optimizer: str = "adam",
                   n_steps: int = 300, learning_rate: float = 0.05, gamma_fraction: float = 0.2,
                   n_rounds: int = 2, tolerance: float = 1e-3, progress: bool = True,
                   device: str | torch.device = "cpu") -> CloneResult:
    """Clone a normalised spectrum into lines and optimise them against it.

    wavelength: (n_pix,) Å increasing; flux: (n_pix,) normalised, finite. In each of ``n_rounds``
    rounds the lines are optimised: with ``optimizer="lm"`` (pseudo-Voigt only) by
    Levenberg–Marquardt until an iteration lowers the loss by less than ``tolerance``
    (relative) or ``n_steps`` iterations; with ``"adam"`` for ``n_steps`` epochs. After a round,
    lines hidden in blends show up as minima of ``flux / model`` and are added
    (:func:`.detect.find_lines` on that ratio) before the next. ``half_window``: Å per line, or
    ``None`` for the automatic per-line window.
    Returns a :class:`CloneResult` whose ``final`` holds the residual per pixel.
    """
    wavelength, flux = check_normalised_spectrum(wavelength, flux)
    if optimizer not in OPTIMIZERS:
        raise ModelError(f"optimizer={optimizer!r} is not known; use one of {OPTIMIZERS}")
    if optimizer == "lm" and profile != "pseudo_voigt":
        raise ModelError(f"optimizer='lm' needs profile='pseudo_voigt' (got {profile!r}); use "
                         "optimizer='adam' for the exact Voigt")
    if n_rounds < 1:
        raise ModelError(f"n_rounds={n_rounds} must be >= 1")
    guess = find_lines(wavelength, flux, prominence=prominence, gamma_fraction=gamma_fraction)
    wavelength_range = (wavelength[0], wavelength[-1])
    model = LineModel(guess.centre, guess.amplitude, guess.sigma, guess.gamma,
                      half_window=half_window, profile=profile,
                      wavelength_range=wavelength_range).to(device)
    wave_t = torch.as_tensor(wavelength, dtype=torch.float64, device=device)
    flux_t = torch.as_tensor(flux, dtype=torch.float64, device=device)
    with torch.no_grad():
        initial = ResidualStats.of((flux_t - model(wave_t)).cpu().numpy())
    history: list[float] = []
    t0 = time.perf_counter()
    for round_ in range(n_rounds):
        if round_ > 0:
            with torch.no_grad():
                ratio = (flux_t / model(wave_t)).cpu().numpy()
            try:
                extra = find_lines(wavelength, ratio, prominence=prominence,
                                   gamma_fraction=gamma_fraction)
            except ModelError:
                break  # nothing left to add
            model = _merge(model, extra, profile, half_window, wavelength_range)

        def loss_fn(model=model):
            # χ² for a nominal 1e-3 per-pixel error: scale-free for Adam, and gives L-BFGS
            # gradients of order unity (a raw mean square of 1e-6 stalls its first steps)
            return 0.5 * torch.sum(((model(wave_t) - flux_t) / _NOMINAL_ERROR) ** 2)

        label = f"clone round {round_ + 1}/{n_rounds}"
        if optimizer == "lm":
            history += refine_lines(
                model, wave_t, flux_t, weight=torch.full_like(flux_t, _NOMINAL_ERROR**-2),
                max_iterations=n_steps, tolerance=tolerance, progress=progress,
                description=label)
        else:
            history += optimise(loss_fn, model, optimizer=optimizer, n_steps=n_steps,
                                learning_rate=learning_rate, progress=progress,
                                description=label)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        final = ResidualStats.of((flux_t - model(wave_t)).cpu().numpy())
    return CloneResult(model=model, guess=guess, initial=initial, final=final, history=history,
                       seconds=seconds, optimizer=optimizer)
