"""The star's radial velocity before a network reads it: the networks take rest-frame spectra.

A network's input layout is fixed in the rest frame, so a spectrum in the observed or
barycentric frame must be shifted first (WASP-14's TRES file, −4.8 km/s, cost the default network
360 K). :func:`estimate_rv` finds the RV with the fit's own search
(:func:`photosphere.infer.optimize.cross_correlation_rv`): the embedded grid at a solar-type
star, broadened to the file's resolution when known, cross-correlated over ±300 km/s (coarse
5 km/s scan, then 1 km/s, then a parabola), with a continuum solved at each trial. Labels off
the star's by ~1000 K move the minimum by well under 1 km/s, small against the 2.6 km/s LSF of
HARPS-N. A spectrum with no pixel in the embedded grid's 5050–5350 Å is cross-correlated with
the shipped optical emulator instead (its 7 windows, Hβ to Hα), which the ``optical`` network
reads.
"""

from __future__ import annotations

import math

#: labels of the template (a G dwarf): the cross-correlation needs lines, not the right star
TEMPLATE = {"teff": 5800.0, "logg": 4.4, "feh": 0.0, "vsini": 3.0}


def estimate_rv(spectrum, resolution: float | None = None) -> float:
    """RV (km/s) of ``spectrum`` in its own wavelength frame, by cross-correlation with the
    embedded grid (see the module docstring). ``resolution``: R, default the file's
    (``meta.extra["resolution"]``) or none. Raises OutOfGridError when no pixel of the spectrum
    lies in the grid's window."""
    from ..errors import OutOfGridError
    from ..grids.load import load_grid_model
    from ..infer.optimize import cross_correlation_rv
    from ..infer.protocol import file_resolution
    from ..infer.settings import ObservationSettings
    from ..io.prepare import mask_nonpositive
    from ..ops.noise import with_uncertainty

    observed = with_uncertainty(mask_nonpositive(spectrum))
    r = resolution if resolution is not None else file_resolution(spectrum)
    settings = ObservationSettings(resolution=r, continuum_degree=2)
    model = load_grid_model()
    try:
        rv = cross_correlation_rv(model, observed, settings, initial=TEMPLATE)
    except OutOfGridError as exc:
        optical = _optical_model()
        try:
            if optical is None:
                raise OutOfGridError("no optical model in this installation")
            rv = cross_correlation_rv(optical, observed, settings, initial=TEMPLATE)
        except OutOfGridError:
            lo, hi = float(model.wavelength[0]), float(model.wavelength[-1])
            raise OutOfGridError(
                f"the RV cannot be measured: the spectrum has no usable pixel in {lo:.0f}-"
                f"{hi:.0f} Å, the window of the HARPS-N-layout networks ({exc}), nor in the "
                f"optical model's windows ({_windows()}); no network can read this "
                "spectrum") from None
    return float(rv) if math.isfinite(rv) else 0.0


def _optical_model():
    """The shipped optical emulator (its line calibration applied), or None when this
    installation lacks it."""
    from ..grids.default_model import optical_model_path
    from ..grids.load import load_emulator

    path = optical_model_path()
    return None if path is None else load_emulator(path)


def _windows() -> str:
    """The optical model's windows, e.g. ``4821-4901, 5140-5340 Å`` (none: not installed)."""
    from ..grids.default_model import model_windows, optical_model_path

    path = optical_model_path()
    if path is None:
        return "not installed"
    return ", ".join(f"{a:.0f}-{b:.0f}" for a, b in model_windows(path)) + " Å"
