"""IRAF ``multispec`` echelle spectra (e.g. MIKE, CarPy, many IRAF-reduced echelles).

The dispersion of each order is in the ``WAT2_nnn`` keywords (concatenated, 68 characters
each) as ``specN = "ap beam dtype w1 dw nw z aplow aphigh [functions]"`` (Valdes 1993, *The
IRAF/NOAO Spectral World Coordinate Systems*, ``noao/onedspec/doc/specwcs.hlp``):

* dtype 0, linear: ``w = (w1 + dw (p - 1)) / (1 + z)``; dtype 1, log-linear:
  ``w = 10**(w1 + dw (p - 1)) / (1 + z)``;
* dtype 2, nonlinear: ``w = Σ_i wt_i (w0_i + W_i(p)) / (1 + z)`` with W_i a Chebyshev (ftype 1)
  or Legendre (2) series in ``n = (p - (pmax + pmin)/2) / ((pmax - pmin)/2)``, a cubic (3) or
  linear (4) spline over ``npieces`` pieces, a pixel-coordinate array (5) or a sampled
  coordinate array (6);

p is the physical pixel, ``p = (l - LTV1) / LTM1_1`` for logical pixel l = 1, 2, ...
Data of shape (bands, orders, pixels) take band 1 as the flux and a band named ``sigma`` /
``error`` / ``noise`` in ``BANDIDn`` (or ``variance``) as the uncertainty. ``nw`` limits each
order's valid pixels (the rest is masked). The WCS label/units attribute gives the unit (Å
unless it says otherwise); air/vacuum comes from ``AIRORVAC``/``VACUUM`` or is assumed (air).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np

from ..errors import FileFormatError
from ..spectrum import EchelleSpectrum, SpectrumMeta
from ._common import (
    angstrom_per_unit,
    check_path,
    header_float,
    header_value,
    medium_from_text,
    open_fits,
    resolve_medium,
)
from ._instrument import instrument_extras


def _wat(header, axis: int) -> str:
    """The concatenated WATn_nnn attribute string of an axis (68-character cards)."""
    parts = []
    for i in range(1, 1000):
        key = f"WAT{axis}_{i:03d}"
        if key not in header:
            break
        parts.append(str(header[key]).ljust(68))
    return "".join(parts)


def is_multispec(header) -> bool:
    return "multispec" in _wat(header, 0).lower() or \
        "multispec" in _wat(header, 1).lower() or \
        str(header_value(header, "CTYPE1", "") or "").upper().startswith("MULTISPE")


@dataclass(frozen=True)
class OrderSolution:
    """One ``specN`` attribute: aperture, beam (the echelle order), dtype, nw, z, functions."""

    aperture: int
    beam: int
    dtype: int
    w1: float
    dw: float
    nw: int
    z: float
    functions: tuple[tuple[float, float, int, tuple[float, ...]], ...]  # (wt, w0, ftype, rest)


def parse_spec(text: str, what: str) -> OrderSolution:
    """Parse the fields of one ``specN = "..."`` string."""
    try:
        f = [float(v) for v in text.split()]
    except ValueError:
        raise FileFormatError(f"{what}: multispec attribute {text[:60]!r} is not numeric; the "
                              "WAT2 keywords are corrupt") from None
    if len(f) < 9:
        raise FileFormatError(f"{what}: multispec attribute {text[:60]!r} has {len(f)} fields, "
                              "at least 9 are needed (ap beam dtype w1 dw nw z aplow aphigh)")
    functions = []
    rest = f[9:]
    while rest:
        if len(rest) < 4:
            raise FileFormatError(f"{what}: truncated dispersion function {rest}")
        wt, w0, ftype = rest[0], rest[1], int(rest[2])
        n_par = _n_fields(ftype, rest[3:], what)
        functions.append((wt, w0, ftype, tuple(rest[3:3 + n_par])))
        rest = rest[3 + n_par:]
    return OrderSolution(int(f[0]), int(f[1]), int(f[2]), f[3], f[4], int(f[5]), f[6],
                         tuple(functions))


def _n_fields(ftype: int, p: list[float], what: str) -> int:
    """Number of parameter + coefficient fields of a function (IRAF specwcs sections 5.2-5.7)."""
    if ftype in (1, 2):       # order pmin pmax c_1..c_order
        n = 3 + int(p[0])
    elif ftype == 3:          # npieces pmin pmax c_1..c_{npieces+3}
        n = 3 + int(p[0]) + 3
    elif ftype == 4:          # npieces pmin pmax c_1..c_{npieces+1}
        n = 3 + int(p[0]) + 1
    elif ftype == 5:          # ncoords w_1..w_ncoords
        n = 1 + int(p[0])
    elif ftype == 6:          # ncoords dummy (p_i, w_i) pairs
        n = 2 + 2 * int(p[0])
    else:
        raise FileFormatError(f"{what}: dispersion function type {ftype} is not an IRAF "
                              "multispec type (1 chebyshev, 2 legendre, 3 cubic spline, "
                              "4 linear spline, 5 pixel array, 6 sampled array)")
    if len(p) < n:
        raise FileFormatError(f"{what}: dispersion function type {ftype} needs {n} fields, "
                              f"the attribute has {len(p)}")
    return n


def _polynomial(ftype: int, par: tuple[float, ...], p: np.ndarray) -> np.ndarray:
    order, pmin, pmax = int(par[0]), par[1], par[2]
    c = par[3:3 + order]
    n = (p - (pmax + pmin) / 2.0) / ((pmax - pmin) / 2.0)
    x_prev, x = np.ones_like(n), n
    out = c[0] * x_prev + (c[1] * x if order > 1 else 0.0)
    for i in range(3, order + 1):  # x_i from x_{i-1}, x_{i-2} (1-based i as in the spec)
        if ftype == 1:
            x_new = 2.0 * n * x - x_prev
        else:
            x_new = ((2 * i - 3) * n * x - (i - 2) * x_prev) / (i - 1)
        out = out + c[i - 1] * x_new
        x_prev, x = x, x_new
    return out


def _spline(ftype: int, par: tuple[float, ...], p: np.ndarray) -> np.ndarray:
    npieces, pmin, pmax = int(par[0]), par[1], par[2]
    c = np.asarray(par[3:])
    s = (p - pmin) / (pmax - pmin) * npieces
    j = np.clip(np.floor(s).astype(int), 0, npieces - 1)
    a, b = (j + 1) - s, s - j
    if ftype == 4:
        return c[j] * a + c[j + 1] * b
    x0, x1 = a ** 3, 1 + 3 * a * (1 + a * b)
    x2, x3 = 1 + 3 * b * (1 + a * b), b ** 3
    return c[j] * x0 + c[j + 1] * x1 + c[j + 2] * x2 + c[j + 3] * x3


def _function(ftype: int, par: tuple[float, ...], p: np.ndarray) -> np.ndarray:
    if ftype in (1, 2):
        return _polynomial(ftype, par, p)
    if ftype in (3, 4):
        return _spline(ftype, par, p)
    if ftype == 5:
        coords = np.asarray(par[1:1 + int(par[0])])
        return np.interp(p, np.arange(1, coords.size + 1, dtype=float), coords)
    pairs = np.asarray(par[2:2 + 2 * int(par[0])]).reshape(-1, 2)
    return np.interp(p, pairs[:, 0], pairs[:, 1])


def order_wavelength(sol: OrderSolution, physical_pixel: np.ndarray) -> np.ndarray:
    """Wavelengths (file units) of one order at physical pixels ``p`` (1-based)."""
    p = np.asarray(physical_pixel, float)
    if sol.dtype == 0:
        w = sol.w1 + sol.dw * (p - 1.0)
    elif sol.dtype == 1:
        w = 10.0 ** (sol.w1 + sol.dw * (p - 1.0))
    elif sol.dtype == 2:
        w = np.zeros_like(p)
        for wt, w0, ftype, par in sol.functions:
            w = w + wt * (w0 + _function(ftype, par, p))
    else:
        raise FileFormatError(f"aperture {sol.aperture} has dispersion type {sol.dtype}: it "
                              "is not wavelength calibrated (dtype -1); calibrate it first")
    return w / (1.0 + sol.z)


def _solutions(header, n_orders: int, what: str) -> list[OrderSolution]:
    wat2 = _wat(header, 2)
    specs = dict(re.findall(r'spec(\d+)\s*=\s*"([^"]*)"', wat2))
    missing = [i for i in range(1, n_orders + 1) if str(i) not in specs]
    if missing:
        raise FileFormatError(f"{what}: WAT2 keywords lack spec{missing[0]} (of {n_orders} "
                              "orders); the multispec WCS is incomplete or truncated")
    return [parse_spec(specs[str(i)], what) for i in range(1, n_orders + 1)]


def _unit(header) -> str:
    m = re.search(r"units\s*=\s*(\S+)", _wat(header, 1))
    return m.group(1) if m else "Angstrom"


def _bands(header, data: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    """(flux, σ or None, source) from (bands, orders, pixels) data."""
    if data.ndim == 2:
        return data, None, None
    labels = [str(header_value(header, f"BANDID{i + 1}", "") or "").lower()
              for i in range(data.shape[0])]
    for i, label in enumerate(labels):
        if i and any(k in label for k in ("sigma", "error", "noise", "uncert")):
            return data[0], np.abs(data[i]), f"band {i + 1} ({label})"
        if i and "variance" in label:
            return data[0], np.sqrt(np.abs(data[i])), f"band {i + 1} ({label}, √)"
    return data[0], None, None


def read_iraf_multispec(path: str | os.PathLike, *,
                        medium: str | None = None) -> EchelleSpectrum:
    """Read an IRAF multispec echelle file into an :class:`EchelleSpectrum` (Å).

    Orders are sorted blue to red; ``order_numbers`` are the beam numbers (echelle orders).
    """
    p = check_path(path)
    what = f"read_iraf_multispec({p})"
    with open_fits(p) as hdul:
        header = hdul[0].header
        data = hdul[0].data
    if data is None or np.ndim(data) not in (1, 2, 3):
        raise FileFormatError(f"{what}: the primary HDU holds no (orders, pixels) image")
    data = np.asarray(data, float)
    if data.ndim == 1:
        data = data[None, :]
    flux, sigma, sigma_source = _bands(header, data)
    n_orders, n_pixels = flux.shape
    sols = _solutions(header, n_orders, what)
    ltv, ltm = header_float(header, "LTV1") or 0.0, header_float(header, "LTM1_1") or 1.0
    physical = (np.arange(1, n_pixels + 1, dtype=float) - ltv) / ltm
    factor = angstrom_per_unit(_unit(header))
    if factor is None:
        raise FileFormatError(f"{what}: the WCS units {_unit(header)!r} are not a length; "
                              "this multispec file is not wavelength calibrated")
    try:
        wave = np.array([order_wavelength(s, physical) for s in sols]) * factor
    except FileFormatError as exc:
        raise FileFormatError(f"{what}: {exc}") from None
    valid = np.arange(n_pixels)[None, :] < np.array([s.nw if s.nw > 0 else n_pixels
                                                     for s in sols])[:, None]
    if np.any(~valid):  # pad invalid tail pixels with increasing wavelengths, then mask them
        step = np.gradient(wave, axis=1)
        for i in np.flatnonzero(~valid.all(axis=1)):
            last = int(valid[i].sum()) - 1
            wave[i, last + 1:] = wave[i, last] + np.abs(step[i, last]) * \
                np.arange(1, n_pixels - last)
    bad = ~valid | ~np.isfinite(flux)
    if sigma is not None:
        bad |= ~np.isfinite(sigma) | (sigma <= 0)
        sigma = np.where(bad, np.inf, sigma)
    flip = wave[:, -1] < wave[:, 0]
    wave[flip], flux[flip], bad[flip] = wave[flip, ::-1], flux[flip, ::-1], bad[flip, ::-1]
    if sigma is not None:
        sigma[flip] = sigma[flip, ::-1]
    rows = np.argsort(wave[:, 0])
    recorded = medium_from_text(header_value(header, "AIRORVAC")) or \
        medium_from_text(header_value(header, "WAVEFRAM"))
    med, medium_extra = resolve_medium(medium, recorded, wave, what=what,
                                       recorded_source="header AIRORVAC/WAVEFRAM")
    instrument, extra = instrument_extras(header, p)
    extra.update(medium_extra)
    extra.update({"product": "iraf_multispec", "dispersion_types": sorted({
        {0: "linear", 1: "log-linear"}.get(s.dtype) or "nonlinear (" + "+".join(
            {1: "chebyshev", 2: "legendre", 3: "cubic spline", 4: "linear spline",
             5: "pixel array", 6: "sampled array"}[f[2]] for f in s.functions) + ")"
        for s in sols}), "sigma_from": sigma_source, "row_kind": "order"})
    meta = SpectrumMeta(object_name=header_value(header, "OBJECT"), instrument=instrument,
                        source=str(p), extra=extra)
    try:
        return EchelleSpectrum.from_arrays(
            wave[rows], np.where(bad, 0.0, flux)[rows],
            None if sigma is None else sigma[rows], mask=bad[rows], mask_nonfinite=True,
            medium=med, flux_unit=str(header_value(header, "BUNIT") or "arbitrary"), meta=meta,
            order_numbers=np.array([s.beam for s in sols])[rows])
    except ValueError as exc:
        raise FileFormatError(f"{what}: {exc}") from None
