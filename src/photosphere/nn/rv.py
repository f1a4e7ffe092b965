"""The star's radial velocity before a network reads it: the networks take rest-frame spectra.

A network's input layout is fixed in the rest frame, so a spectrum in the observed or
barycentric frame must be shifted first (WASP-14's TRES file, −4.8 km/s, cost the default network
360 K). :func:`estimate_rv` finds the RV as the fit does: the embedded grid at a solar-type star,
broadened to the file's resolution when known, cross-correlated over ±300 km/s (coarse 5 km/s
scan, then 1 km/s, then a parabola; :func:`photosphere.infer.optimize.initial_rv`), with a
continuum solved at each trial. Labels off the star's by ~1000 K move the minimum by well under
1 km/s, small against the 2.6 km/s LSF of HARPS-N.
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
    import torch

    from ..errors import OutOfGridError
    from ..grids.load import load_grid_model
    from ..infer.batch import mask_nonpositive
    from ..infer.chain import ObservationChain
    from ..infer.optimize import initial_rv
    from ..infer.protocol import file_resolution
    from ..ops.noise import with_uncertainty

    model = load_grid_model()
    observed = with_uncertainty(mask_nonpositive(spectrum))
    r = resolution if resolution is not None else file_resolution(spectrum)
    try:
        chain = ObservationChain(model, observed, resolution=r, continuum_degree=2,
                                 rv_bounds=(-300.0, 300.0))
    except OutOfGridError as exc:
        lo, hi = float(model.wavelength[0]), float(model.wavelength[-1])
        raise OutOfGridError(f"the RV cannot be measured: the spectrum has no usable pixel in "
                             f"{lo:.0f}-{hi:.0f} Å, the window the networks read ({exc}); a "
                             "network cannot read this spectrum either") from None
    start = {**{n: TEMPLATE.get(n, 0.5 * sum(model.bounds[n])) for n in chain.label_names},
             "vsini": TEMPLATE["vsini"], "rv": 0.0}
    with torch.no_grad():
        rv = initial_rv(chain, chain.theta_from(start))
    return float(rv) if math.isfinite(rv) else 0.0
