"""Real spectra moved into the syntheses' space before a network reads them.

A network trained on the bare emulator of the syntheses (``nn train --grid optical
--uncalibrated``) has never seen a real star. The shipped optical model also holds a line
calibration on real stars (:mod:`photosphere.grids.calibrated`): per model pixel an exponent
c(λ), so that a real star looks like ``f ** c`` of the synthesis at labels whose [Fe/H] is
shifted by the zero point z. Here that calibration is inverted on the *input*:

    image  ->  image ** (1 / c(λ))         (c interpolated onto the layout's rest-frame pixels)
    [Fe/H] reported = the root of  x + z·w(x) = [Fe/H] predicted      (w: 1 above −1, 0 below −2)

so the network reads the real spectrum in the space it was trained in. With the emulator at hand
(:meth:`InputCalibration.with_models`) the correction is then refined by the model itself:
at the network's labels θ the bare and the calibrated emulator are imaged as the network sees a
star (the star's R, its vsini, the layout, per-row normalisation), and the input is multiplied by
their ratio B(θ) / C(θ), the difference the calibration predicts *after* the instrument's
broadening. Pixels the calibration cannot fix (its mask: lines missing from the list or wrong in
shape, the pixels the fit leaves out) and pixels more than :data:`CLIP` σ from C(θ) (the fit's
robust clipping) are not read: they take the bare model's value B(θ). The network reads the
result at the new θ, ``iterations`` times. [Fe/H] then needs no zero-point shift: C already holds
it. Measured on the real benchmark stars (docs/nn.md): without the mask and clipping the ratio
alone does not help; the ≈ 10 % of pixels the calibration distrusts carry most of the gap. The
calibration made
without any one star is exact and cheap (:meth:`LineCalibration.without`), so the benchmark
judges each calibration star with an input calibration that never saw it, without retraining the
network. (c is defined at the synthesis' resolution; on a spectrum broadened by an LSF the same
exponent is applied to the broadened profile: exact for weak lines, whose depth scales linearly
through a convolution, approximate in saturated cores.)

A network trained on the *calibrated* emulator C (``nn train --grid optical`` without
``--uncalibrated``) reads real spectra as they are, so there is no exponent to invert; the same
rounds then run with the network's training model T = C in place of B: the pixels the
calibration distrusts and the clipped ones are read from T(θ), the others kept. To judge a
calibration star k without retraining, the star's model is the calibration made without it,
C₋ₖ, and the input is multiplied by T(θ) / C₋ₖ(θ): at the fixed point the network reads T(θ)
exactly where C₋ₖ(θ) matches the star, so it answers what a network trained on C₋ₖ would (to
the network's own inversion error), and star k's pixels never enter through the model it was
trained on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..grids.calibrated import FLUX_FLOOR, LineCalibration, _invert_shift

#: km/s, ζ_RT of the images the ratio is taken between (the middle of the training range 0-7)
RATIO_MACROTURBULENCE = 3.5
#: pixels further than this many σ (rms of input − C(θ)) from the calibrated model are not read
CLIP = 3.0
#: rounds of (model images at θ, network) after the first reading
ITERATIONS = 6


@dataclass(frozen=True)
class InputCalibration:
    """The inverse of a line calibration on a network's layout.

    exponent: (n_orders, n_pixels) c on the layout's pixels (1 for a network trained on the
    calibrated emulator); zero_point: dex (z above; 0 likewise); stars: the calibration stars
    the star's model was made from; mask: (n_orders, n_pixels) True where the calibration
    distrusts the model (its ``mask`` on the layout); models: the simulators of the network's
    training model T and of the star's model C, and the model's DataConfig
    (:meth:`with_models`), or None (the exponent inversion alone); iterations: rounds of the
    refinement; clip: pixels further than this many σ from C(θ) are read from the training
    model (inf: none); bias_rounds: rounds of removing the network's own inversion bias at the
    labels read (:mod:`photosphere.nn.inversion_bias`; 0: not removed).
    """

    exponent: np.ndarray
    zero_point: float
    stars: tuple[str, ...]
    mask: np.ndarray | None = None
    models: tuple[Any, Any, Any] | None = field(default=None, repr=False)
    iterations: int = ITERATIONS
    clip: float = CLIP
    bias_rounds: int = 0

    @classmethod
    def with_models(cls, calibration: LineCalibration, layout, base, config,
                    iterations: int = ITERATIONS,
                    trained: LineCalibration | None = None) -> InputCalibration:
        """The input calibration of a network trained on the bare emulator ``base``
        (``trained`` None: the exponent inversion, refined by the ratio of ``base`` to ``base``
        calibrated by ``calibration``) or on ``base`` calibrated by ``trained`` (no inversion;
        the ratio of that model to ``base`` calibrated by ``calibration``, e.g. ``trained``
        without a star; the mask of both), module docstring; ``layout``: the model's (a
        :class:`~photosphere.nn.data.StoredLayout`), ``config``: its DataConfig."""
        from ..grids.calibrated import CalibratedModel
        from .data import EchelleSimulator

        target = base if trained is None else CalibratedModel(base, trained)
        sims = tuple(EchelleSimulator(src, layout, config.nominal_resolution, config.epsilon,
                                      config.fixed, config.columns)
                     for src in (target, CalibratedModel(base, calibration)))
        plain = cls.of(calibration, layout.wavelength)
        if trained is None:
            return cls(plain.exponent, plain.zero_point, plain.stars, plain.mask,
                       (*sims, config), iterations)
        mask = plain.mask | cls.of(trained, layout.wavelength).mask
        return cls(np.ones_like(plain.exponent), 0.0, plain.stars, mask, (*sims, config),
                   iterations)

    def read(self, image: np.ndarray, run: Callable, names: tuple[str, ...],
             resolution: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The network ``run(image) -> (μ, Σ)`` (labels ``names``) on ``image`` moved into the
        syntheses' space: (the image it read last, μ, Σ), μ on the stars' [Fe/H] scale;
        ``resolution``: R of the spectrum (None: the model's nominal R)."""
        moved = self.apply(image)
        mu, cov = run(moved)
        mu = self._shift(mu, names)
        if self.models is None:
            return moved, mu, cov
        img = np.asarray(image, dtype=float)
        blank = np.all(img == 1.0, axis=-1)  # windows not read stay continuum
        bad = None
        for _ in range(self.iterations):
            b, c = self.images(mu, resolution)
            residual = (img - c)[~blank]
            bad = self.mask | (np.abs(img - c) > self.clip * np.sqrt(np.mean(residual ** 2)))
            moved = np.where(bad, b, img * b / np.clip(c, FLUX_FLOOR, None))
            moved[blank] = 1.0
            moved = moved.astype(np.asarray(image).dtype)
            mu, cov = run(moved)
        if self.bias_rounds:
            from .inversion_bias import remove_inversion_bias

            quiet = None if bad is None else bad & ~blank[:, None]  # model values, no noise
            mu = remove_inversion_bias(mu, img, run, lambda t: self.training_image(t, resolution),
                                       quiet=quiet, rounds=self.bias_rounds)
        return moved, mu, cov

    def images(self, mu: np.ndarray, resolution: float | None) -> tuple[np.ndarray, np.ndarray]:
        """The training model's and the star's model's images, B(θ) (or T(θ)) and C(θ), on the
        layout at the estimated labels ``mu`` (rows normalised)."""
        return self.training_image(mu, resolution), self._image(self.models[1], mu, resolution)

    def training_image(self, mu: np.ndarray, resolution: float | None) -> np.ndarray:
        """The training model's image B(θ) (or T(θ)) alone (see :meth:`images`)."""
        return self._image(self.models[0], mu, resolution)

    def _image(self, sim, mu: np.ndarray, resolution: float | None) -> np.ndarray:
        from .data import labels_in_bounds, normalise_orders

        base, _, config = self.models  # both images at labels inside the training model's box
        labels = labels_in_bounds(np.asarray(mu, dtype=float), config, base.source.bounds)
        kw = {"macroturbulence": torch.tensor([RATIO_MACROTURBULENCE])}
        if resolution:
            kw["resolution"] = torch.tensor([float(resolution)])
        with torch.no_grad():
            return normalise_orders(sim.images(labels, **kw)).numpy()[0]

    def _shift(self, mu: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
        out = np.array(mu, dtype=float)
        if "feh" in names:
            i = list(names).index("feh")
            out[i] = self.reported_feh(out[i])
        return out

    @classmethod
    def of(cls, calibration: LineCalibration, layout_wavelength: np.ndarray) -> InputCalibration:
        """``calibration`` (on its model's wavelength grid) on the layout ``layout_wavelength``
        (n_orders, n_pixels) Å, in the same medium and rest frame."""
        layout = np.asarray(layout_wavelength, dtype=float)
        wave = np.asarray(calibration.wavelength, float)
        c = np.interp(layout.ravel(), wave, np.asarray(calibration.exponent, float))
        mask = np.interp(layout.ravel(), wave, np.asarray(calibration.mask, float)) > 0
        return cls(c.reshape(layout.shape), float(calibration.zero_point),
                   calibration.star_names, mask.reshape(layout.shape))

    def apply(self, image: np.ndarray) -> np.ndarray:
        """(n_orders, n_pixels) normalised input -> the same in the syntheses' space,
        ``image ** (1 / c)`` (flux floored at the calibration's floor first)."""
        img = np.asarray(image, dtype=float)
        out = np.clip(img, FLUX_FLOOR, None) ** (1.0 / self.exponent.reshape(img.shape))
        return out.astype(np.asarray(image).dtype)

    def reported_feh(self, feh: float) -> float:
        """[Fe/H] on the stars' scale for the network's [Fe/H] in the syntheses' space."""
        return float(_invert_shift(float(feh), self.zero_point)) if self.zero_point else float(feh)
