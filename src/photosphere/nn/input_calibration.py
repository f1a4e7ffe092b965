"""Real spectra moved into the syntheses' space before a network reads them.

A network trained on the bare emulator of the syntheses (``nn train --grid optical
--uncalibrated``) has never seen a real star. The shipped optical model also holds a line
calibration on real stars (:mod:`photosphere.grids.calibrated`): per model pixel an exponent
c(λ), so that a real star looks like ``f ** c`` of the synthesis at labels whose [Fe/H] is
shifted by the zero point z. Here that calibration is inverted on the *input*:

    image  ->  image ** (1 / c(λ))         (c interpolated onto the layout's rest-frame pixels)
    [Fe/H] reported = the root of  x + z·w(x) = [Fe/H] predicted      (w: 1 above −1, 0 below −2)

so the network reads the real spectrum in the space it was trained in. The calibration made
without any one star is exact and cheap (:meth:`LineCalibration.without`), so the benchmark
judges each calibration star with an input calibration that never saw it, without retraining the
network. (c is defined at the synthesis' resolution; on a spectrum broadened by an LSF the same
exponent is applied to the broadened profile: exact for weak lines, whose depth scales linearly
through a convolution, approximate in saturated cores.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..grids.calibrated import FLUX_FLOOR, LineCalibration, _invert_shift


@dataclass(frozen=True)
class InputCalibration:
    """The inverse of a line calibration on a network's layout.

    exponent: (n_orders, n_pixels) c on the layout's pixels; zero_point: dex (z above);
    stars: the calibration stars it was made from.
    """

    exponent: np.ndarray
    zero_point: float
    stars: tuple[str, ...]

    @classmethod
    def of(cls, calibration: LineCalibration, layout_wavelength: np.ndarray) -> InputCalibration:
        """``calibration`` (on its model's wavelength grid) on the layout ``layout_wavelength``
        (n_orders, n_pixels) Å, in the same medium and rest frame."""
        layout = np.asarray(layout_wavelength, dtype=float)
        c = np.interp(layout.ravel(), np.asarray(calibration.wavelength, float),
                      np.asarray(calibration.exponent, float)).reshape(layout.shape)
        return cls(c, float(calibration.zero_point), calibration.star_names)

    def apply(self, image: np.ndarray) -> np.ndarray:
        """(n_orders, n_pixels) normalised input -> the same in the syntheses' space,
        ``image ** (1 / c)`` (flux floored at the calibration's floor first)."""
        img = np.asarray(image, dtype=float)
        out = np.clip(img, FLUX_FLOOR, None) ** (1.0 / self.exponent.reshape(img.shape))
        return out.astype(np.asarray(image).dtype)

    def reported_feh(self, feh: float) -> float:
        """[Fe/H] on the stars' scale for the network's [Fe/H] in the syntheses' space."""
        return float(_invert_shift(float(feh), self.zero_point)) if self.zero_point else float(feh)
