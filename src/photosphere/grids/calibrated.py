"""Line data calibrated on real stars with known labels, in flux space.

A synthesis carries the errors of its line list (log gf, damping, missing lines) into every fit:
a line too strong in the model is absorbed into [Fe/H], a missing blend into Teff. The classical
remedy fits astrophysical log gf to the Sun; here the line strengths are calibrated on *several*
real stars at once (the Sun, Procyon, giants, metal-poor stars) and applied to the model's
flux, so that no re-synthesis is needed:

* **Exponent** ``c(λ)`` per model pixel: the model becomes ``f ** c``, i.e. the pseudo optical
  depth ``-ln f`` scaled by c, as in the Sun-only calibration of the embedded grid
  (:mod:`photosphere.grids.line_strengths`). For a weak line ``-ln f`` is proportional to gf,
  so ``log10 c`` plays the part of an astrophysical Δlog gf, pixel by pixel; for saturated lines
  it scales the wings (damping). ``c`` is the least-squares ratio of observed to model
  ``ln f`` over every calibration star, each fitted with its *reference* Teff, log g and [Fe/H]
  held fixed (RV, vsini, [α/Fe], vmic and the continuum free), shrunk towards 1 where the stars
  say little.
* **Mask**: pixels the exponent cannot fix (lines missing from the list, lines wrong in shape or
  position) are those the protocol's robust clipping removes in the calibration fits: a pixel
  clipped in at least :data:`MASK_FRACTION` of the stars that cover it (two at least) is left
  out of fits, with its neighbours. The clipping is relative to each star's own scatter, so noisy
  stars do not mask pixels by their noise. The exponents are fitted on the unclipped pixels.

Each star's contribution is kept (:class:`StarResiduals`), so the calibration without any one
star is exact and cheap (:meth:`LineCalibration.without`): the benchmark judges every
calibration star leave-one-out.

* **[Fe/H] zero point**. The exponents do not make the model self-consistent in [Fe/H]: in the
  calibration fits (Teff, log g, [Fe/H] held) vmic and [α/Fe] absorb part of a line-strength
  error (the Sun's vmic goes to 0.6 km/s), and the free fit slides back along the
  vmic–[Fe/H] valley: a star calibrated on itself alone is fitted 0.1–0.3 dex low. The
  calibration therefore also records, per star, the [Fe/H] offset (fitted − reference) of a
  free fit with the calibrated model made *without* that star (:attr:`LineCalibration.offsets`),
  and the model evaluates its base at ``[Fe/H] + zero_point``, the median offset of the stars
  with reference [Fe/H] ≥ −1, so that the [Fe/H] it reports is on the stars' scale. The zero
  point fades out linearly to none at [Fe/H] −2: the metal-poor stars show no common offset.
  Judging star k, the zero point is the median of the other stars' offsets each measured with
  the calibration made without both them and k: no star's reference labels enter its own
  judgement.

The residuals are taken in the observed frame (after the instrument's broadening) and moved to
the model's rest-frame pixels by the fitted RV; for weak lines broadening is linear in depth,
so the depth ratio is nearly independent of resolution.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, ModelError
from .emulator import _differentiated

#: model depth (1 - f) below which a pixel carries no information on its line strength
MIN_DEPTH = 0.02
#: weight of the prior c = 1, in units of one star at depth 0.1 and S/N 100
PRIOR = 1.0
#: c is kept in this range (a factor 5 in gf either way)
EXPONENT_RANGE = (0.2, 5.0)
#: normalised flux floor before taking logarithms
FLUX_FLOOR = 1e-3
#: fraction of the covering stars whose fit clipped a pixel, from which it is masked
MASK_FRACTION = 0.5
#: pixels on each side of a masked pixel also masked (the line's wings; RV and resolution)
MASK_DILATE = 3
#: the [Fe/H] zero point applies in full above this [Fe/H] (dex), and is measured on the
#: calibration stars whose reference [Fe/H] is at least this
ZERO_POINT_FULL_ABOVE = -1.0
#: ... and not at all below this [Fe/H] (dex), linearly in between: metal-poor spectra show no
#: common offset (their lines are weak, on the linear part of the curve of growth, where vmic
#: cannot trade with [Fe/H]; docs/grids.md)
ZERO_POINT_NONE_BELOW = -2.0
#: HDF5 group of a model file holding the calibration
GROUP = "line_calibration"


def star_aliases(name: str) -> frozenset[str]:
    """The names a star goes by in ``name``: the part before any parenthesis, split at ``/``,
    lower-cased without spaces or leading zeros of numbers ("alf Tau / Aldebaran (K5 III)" ->
    {"alftau", "aldebaran"}; "HD009826 (MILES 0063)" -> {"hd9826"})."""
    head = name.split("(", 1)[0] if not name.startswith("(") else name
    out = set()
    for alias in head.split("/"):
        key = re.sub(r"\s+", "", alias).lower()
        key = re.sub(r"(?<!\d)0+(?=\d)", "", key)
        if key:
            out.add(key)
    return frozenset(out or {name})


def same_star(a: str, b: str) -> bool:
    """True when the names ``a`` and ``b`` share an alias (:func:`star_aliases`)."""
    return a == b or bool(star_aliases(a) & star_aliases(b))


@dataclasses.dataclass(frozen=True)
class StarResiduals:
    """One calibration star's data and model on the model's rest-frame pixels.

    star: the star's name. data, model: ``(n_pix,)`` continuum-normalised observed flux and the
    model at the star's reference labels (NaN where the star has no pixel). weight: ``(n_pix,)``
    1/σ² of the normalised data (0 where absent or masked). labels: the labels of that model
    (reference Teff, log g, [Fe/H]; fitted [α/Fe], vmic, vsini, RV). clipped: ``(n_pix,)``
    True where the star's fit clipped the pixel (None: nothing clipped).
    """

    star: str
    data: np.ndarray
    model: np.ndarray
    weight: np.ndarray
    labels: dict[str, float]
    clipped: np.ndarray | None = None

    def clipped_mask(self) -> np.ndarray:
        return (np.zeros(len(self.data), bool) if self.clipped is None
                else np.asarray(self.clipped, bool))


@dataclasses.dataclass(frozen=True)
class LineCalibration:
    """Per-pixel exponents and mask on a model's wavelength grid, from real stars.

    wavelength: ``(n_pix,)`` Å, the model's grid. exponent: ``(n_pix,)`` c (1 = as
    synthesised). mask: ``(n_pix,)`` True = left out of fits. stars: the calibration stars'
    residuals (kept so that any star can be left out). tied: labels the stars' fits tied to
    the others by relations (:mod:`.tied_labels`), to be tied the same way in every fit with
    the calibrated model. held: labels tied by relations in the stars' fits only (so that a
    free label cannot absorb a line-strength error the exponents should take); free in fits
    with the calibrated model. offsets: ``(n_star, n_star)`` [Fe/H] offsets of free fits
    (:meth:`with_offsets`), or None when not measured. zero_point: dex added to [Fe/H] before
    the base model is evaluated, in full above [Fe/H] −1 and fading to none at −2 (the median
    offset of the stars with reference [Fe/H] ≥ −1; 0 without offsets).
    """

    wavelength: np.ndarray
    exponent: np.ndarray
    mask: np.ndarray
    stars: tuple[StarResiduals, ...]
    tied: tuple[str, ...] = ()
    held: tuple[str, ...] = ()
    offsets: np.ndarray | None = None
    zero_point: float = 0.0

    @property
    def star_names(self) -> tuple[str, ...]:
        return tuple(s.star for s in self.stars)

    def with_offsets(self, offsets: np.ndarray) -> LineCalibration:
        """This calibration with the stars' [Fe/H] offsets (dex): ``offsets[k, j]`` = fitted −
        reference [Fe/H] of star j, fitted with this calibration made without j and without
        star k (``k == j``, or k another spectrum of the same star: without j only); NaN where
        the fit failed. The zero point becomes the median of the diagonal over the stars with
        reference [Fe/H] ≥ :data:`ZERO_POINT_FULL_ABOVE`."""
        offsets = np.asarray(offsets, float)
        n = len(self.stars)
        if offsets.shape != (n, n):
            raise ModelError(f"offsets must be ({n}, {n}), one row and column per calibration "
                             f"star; got {offsets.shape}")
        return dataclasses.replace(self, offsets=offsets, zero_point=_zero_point(
            np.diag(offsets), self.reference_feh))

    @property
    def reference_feh(self) -> np.ndarray:
        """``(n_star,)`` the calibration stars' reference [Fe/H] (dex; NaN when unknown)."""
        return np.array([float(s.labels.get("feh", np.nan)) for s in self.stars])

    @classmethod
    def from_stars(cls, wavelength: np.ndarray, stars: Sequence[StarResiduals],
                   tied: Sequence[str] = (), held: Sequence[str] = ()) -> LineCalibration:
        """Combine stars: the least-squares ratio of ``ln f`` per pixel over the unclipped
        pixels with the prior c = 1, and the mask from how often the pixel was clipped."""
        wavelength = np.asarray(wavelength, float)
        n = len(wavelength)
        if not stars:
            return cls(wavelength, np.ones(n), np.zeros(n, bool), (), tuple(tied), tuple(held))
        model = np.stack([np.clip(np.nan_to_num(s.model, nan=1.0), FLUX_FLOOR, None)
                          for s in stars])
        data = np.stack([np.clip(np.nan_to_num(s.data, nan=1.0), FLUX_FLOOR, None)
                         for s in stars])
        w = np.stack([np.where(np.isfinite(s.data) & np.isfinite(s.model), s.weight, 0.0)
                      for s in stars])
        clipped = np.stack([s.clipped_mask() for s in stars]) & (w > 0)
        tau_m, tau_d = -np.log(model), -np.log(data)
        # σ(ln f) = σ(f) / f: weights of the log-flux residuals
        informative = np.where(clipped, 0.0, w * data ** 2 * ((1.0 - model) > MIN_DEPTH))
        prior = PRIOR * 1e4 * 0.1 ** 2  # one star at S/N 100 and depth 0.1
        a = np.sum(informative * tau_m ** 2, axis=0) + prior
        b = np.sum(informative * tau_m * tau_d, axis=0) + prior
        exponent = np.clip(b / a, *EXPONENT_RANGE)
        n_cov = (w > 0).sum(0)
        bad = (n_cov >= 2) & (clipped.sum(0) >= MASK_FRACTION * np.maximum(n_cov, 1))
        if MASK_DILATE:
            kernel = np.ones(2 * MASK_DILATE + 1)
            bad = np.convolve(bad.astype(float), kernel, mode="same") > 0
        return cls(wavelength, exponent, bad, tuple(stars), tuple(tied), tuple(held))

    def without(self, star: str) -> LineCalibration:
        """The calibration made from every star but ``star`` (leave-one-out): every
        calibration spectrum of the same star goes (:func:`same_star`: the Sun's HARPS and
        UVES spectra, Aldebaran at high resolution and in MILES)."""
        kept = [i for i, s in enumerate(self.stars) if not same_star(s.star, star)]
        if len(kept) == len(self.stars):
            return self
        out = LineCalibration.from_stars(self.wavelength, [self.stars[i] for i in kept],
                                         self.tied, self.held)
        if self.offsets is None:
            return dataclasses.replace(out, zero_point=self.zero_point)
        row = next(i for i, s in enumerate(self.stars) if same_star(s.star, star))
        # the other stars' offsets, each measured without them and without `star`
        return dataclasses.replace(out, zero_point=_zero_point(self.offsets[row, kept],
                                                               self.reference_feh[kept]))

    def summary(self) -> dict[str, Any]:
        """Stars, fraction of pixels masked and changed, spread of log10 c."""
        log_c = np.log10(self.exponent)
        return {"stars": list(self.star_names), "tied": list(self.tied),
                "held": list(self.held),
                "n_pixels": len(self.wavelength),
                "masked_fraction": float(self.mask.mean()),
                "changed_fraction": float(np.mean(np.abs(log_c) > 0.01)),
                "log10_exponent_p5_p95": [float(np.percentile(log_c, q)) for q in (5, 95)],
                "feh_zero_point": float(self.zero_point),
                "feh_offsets": (None if self.offsets is None
                                else [None if not np.isfinite(v) else float(v)
                                      for v in np.diag(self.offsets)])}

    # -- storage -------------------------------------------------------------------------------
    def write(self, group) -> None:
        """Write into an open HDF5 group."""
        group.attrs["stars"] = json.dumps([s.star for s in self.stars])
        group.attrs["labels"] = json.dumps([s.labels for s in self.stars])
        group.attrs["tied"] = json.dumps(list(self.tied))
        group.attrs["held"] = json.dumps(list(self.held))
        group.attrs["zero_point"] = float(self.zero_point)
        if self.offsets is not None:
            group.create_dataset("offsets", data=self.offsets)
        for name in ("wavelength", "exponent", "mask"):
            group.create_dataset(name, data=getattr(self, name), compression="gzip")
        n = len(self.wavelength)
        for key in ("data", "model", "weight", "clipped"):
            rows = [s.clipped_mask() if key == "clipped" else getattr(s, key)
                    for s in self.stars]
            group.create_dataset(f"star_{key}", data=np.reshape(rows, (len(rows), n)).astype(
                np.float32), compression="gzip", shuffle=True)

    @classmethod
    def read(cls, group) -> LineCalibration:
        """Read what :meth:`write` wrote."""
        names = json.loads(group.attrs["stars"])
        labels = json.loads(group.attrs["labels"])
        arrays = {k: group[f"star_{k}"][:].astype(float)
                  for k in ("data", "model", "weight", "clipped")}
        stars = tuple(StarResiduals(n, arrays["data"][i], arrays["model"][i],
                                    arrays["weight"][i], labels[i], arrays["clipped"][i] > 0)
                      for i, n in enumerate(names))
        tied = tuple(json.loads(group.attrs.get("tied", "[]")))
        held = tuple(json.loads(group.attrs.get("held", "[]")))
        offsets = group["offsets"][:] if "offsets" in group else None
        return cls(group["wavelength"][:], group["exponent"][:],
                   group["mask"][:].astype(bool), stars, tied, held, offsets,
                   float(group.attrs.get("zero_point", 0.0)))


def _zero_point(offsets: np.ndarray, reference_feh: np.ndarray) -> float:
    """The median of the finite ``offsets`` of stars with reference [Fe/H] ≥
    :data:`ZERO_POINT_FULL_ABOVE`; 0 when there is none."""
    offsets = np.asarray(offsets, float)
    use = np.isfinite(offsets) & (np.asarray(reference_feh, float) >= ZERO_POINT_FULL_ABOVE)
    return float(np.median(offsets[use])) if use.any() else 0.0


def zero_point_weight(feh):
    """How much of the zero point applies at ``feh`` (dex; a tensor or array): 1 above
    :data:`ZERO_POINT_FULL_ABOVE`, 0 below :data:`ZERO_POINT_NONE_BELOW`, linear between."""
    span = ZERO_POINT_FULL_ABOVE - ZERO_POINT_NONE_BELOW
    if isinstance(feh, torch.Tensor):
        return ((feh - ZERO_POINT_NONE_BELOW) / span).clamp(0.0, 1.0)
    return np.clip((np.asarray(feh, float) - ZERO_POINT_NONE_BELOW) / span, 0.0, 1.0)


def has_calibration(path: str | Path) -> bool:
    """Whether the model file at ``path`` holds a line calibration."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return GROUP in f
    except OSError:
        return False


def read_calibration(path: str | Path) -> LineCalibration:
    """The line calibration stored in a model file."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if GROUP not in f:
                raise CheckpointError(f"{path} holds no line calibration; make one with "
                                      "`photosphere grid calibrate-lines MODEL.h5`")
            return LineCalibration.read(f[GROUP])
    except (OSError, KeyError, ValueError) as exc:
        raise CheckpointError(f"the line calibration in {path} is corrupt or incomplete "
                              f"({exc}); make it again with `photosphere grid calibrate-lines`"
                              ) from None


def write_calibration(path: str | Path, calibration: LineCalibration) -> Path:
    """Store ``calibration`` in the model file at ``path`` (replacing any before), atomically:
    the file is copied, the group written into the copy, and the copy renamed over the file."""
    import shutil

    import h5py

    from .._files import atomic_path

    path = Path(path)
    with atomic_path(path, suffix=".h5.tmp") as tmp:
        shutil.copyfile(path, tmp)
        with h5py.File(tmp, "a") as f:
            if GROUP in f:
                del f[GROUP]
            calibration.write(f.create_group(GROUP))
    return path


def _invert_shift(base_feh: float, zero_point: float) -> float:
    """The reported [Fe/H] at which the base model is evaluated at ``base_feh``: the root of
    ``x + zero_point * zero_point_weight(x) = base_feh`` (monotonic for |zero point| < 1)."""
    lo, hi = base_feh - abs(zero_point) - 1e-9, base_feh + abs(zero_point) + 1e-9
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if mid + zero_point * float(zero_point_weight(mid)) < base_feh:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


class CalibratedModel:
    """A forward model with a :class:`LineCalibration` applied: ``f ** c`` of the base model
    at ``[Fe/H] + zero_point × w([Fe/H])`` (:func:`zero_point_weight`; the [Fe/H] bounds moved
    to match), and the calibration's mask offered to the observation chain (``model_mask``).

    The base model's own error terms are not offered: the calibrated model is fitted as exact,
    its remaining error (emulation, line list) is in the misfit jitter and the σ_sys measured on
    real stars.
    """

    def __init__(self, base, calibration: LineCalibration) -> None:
        if len(calibration.wavelength) != len(base.wavelength) or not np.allclose(
                calibration.wavelength, base.wavelength, rtol=0, atol=1e-6):
            raise ModelError("the line calibration was made on another wavelength grid than "
                             "this model's; make it again for this model")
        self.base = base
        self.calibration = calibration
        self.label_names = tuple(base.label_names)
        self.bounds = dict(base.bounds)
        self._feh = self.label_names.index("feh") if "feh" in self.label_names else None
        zero_point = float(calibration.zero_point) if self._feh is not None else 0.0
        self.zero_point = zero_point
        if zero_point:  # the bounds where the base's own bounds fall
            self.bounds["feh"] = tuple(float(_invert_shift(b, zero_point))
                                       for b in self.bounds["feh"])
        self.wavelength = base.wavelength
        self.medium = base.medium
        self._exponent = torch.as_tensor(calibration.exponent, dtype=torch.float64)

    @property
    def model_mask(self) -> np.ndarray:
        """``(n_pix,)`` True where the model is not to be trusted (left out of fits)."""
        return self.calibration.mask

    def without(self, star: str) -> CalibratedModel:
        """This model calibrated without ``star`` (leave-one-out)."""
        return CalibratedModel(self.base, self.calibration.without(star))

    def predict(self, labels) -> torch.Tensor:
        """labels (..., d) -> (..., n_pix) calibrated normalised flux."""
        if self.zero_point:
            labels = torch.as_tensor(labels)
            labels = labels.to(torch.float64) if not labels.is_floating_point() else labels
            onehot = torch.zeros(labels.shape[-1], dtype=labels.dtype)
            onehot[self._feh] = 1.0
            shift = self.zero_point * zero_point_weight(labels[..., self._feh])
            labels = labels + shift[..., None] * onehot
        flux = self.base.predict(labels).clamp(min=FLUX_FLOOR)
        exponent = self._exponent.to(flux.dtype)
        # f ** c as exp(c · ln f): the same to rounding, 1.6x faster than torch's pow with a
        # tensor exponent on CPU (the fit evaluates it for every pixel of every row); in place
        # on the fresh clamped tensor unless something is differentiated
        if _differentiated(flux):
            return torch.exp(torch.log(flux) * exponent)
        return flux.log_().mul_(exponent).exp_()

    def __getattr__(self, name: str):
        # velocity_step, summary, ... of the base model (not its error terms: see the class doc)
        if name in ("predict_error_templates", "predict_variance") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.__dict__["base"], name)
