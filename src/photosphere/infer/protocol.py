"""The default protocol for real spectra: what ``photosphere fit FILE`` and ``photosphere.fit``
do when the user gives nothing but the file, chosen on the real-star benchmark (docs/benchmark.md,
"Choosing the default protocol").

* **Continuum**: a cubic B-spline with knots every :data:`CONTINUUM_KNOT_SPACING` Å in every
  order (or model window), solved linearly at each step: it follows normalised and
  unnormalised spectra (blaze, flux calibration) alike, where one quadratic per order did not.
* **Clipping** at :data:`CLIP` robust σ: pixels the model cannot make (lines missing from the
  line list, cosmic rays, telluric residuals) are masked and the fit repeated.
* **Misfit jitter**: a per-spectrum term added to every pixel's variance so that χ²_red = 1;
  the σ of a model that does not describe the data are inflated rather than formal.
* **Resolution** from the file when the reader knows it (header keywords or the instrument's
  documented R, ``meta.extra["resolution"]``) and the caller gave none.

The low-level :func:`~photosphere.infer.optimize.fit` keeps its plain defaults (one polynomial,
no clipping, no jitter): the protocol is a choice for real data, applied by the command line,
the batch runner and the public API.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from .settings import ObservationSettings

#: Å between the knots of the default continuum spline.
CONTINUUM_KNOT_SPACING = 50.0
#: robust standard deviations beyond which a pixel is clipped.
CLIP = 3.0
#: the misfit treatment of least-squares fits.
MISFIT = "jitter"
#: resolving power below which a spectrum counts as low resolution (the benchmark's MILES tier)
LOW_RESOLUTION = 20_000.0
#: σ_sys of each shipped model fitted with this protocol: what its σ miss on real stars
#: (docs/benchmark.md, "`fit`: the systematic floor and honest σ").
#: * embedded: the floor giving unit mean-square normalised errors over all the "ok" stars of a
#:   benchmark tier (:func:`photosphere.benchmark.floor.systematic_floor`), ``photosphere
#:   benchmark --engine fit --systematic-floor``, 2026-12-06: high resolution from its 5 FGK
#:   stars (the sixth, 2MASS J0344+0553, does not reach its 5050-5350 Å window), low resolution
#:   from the 38 MILES stars (R ~ 2200).
#: * optical: ``python benchmarks/optical_floor.py`` on the tables of ``photosphere benchmark
#:   --model optical --systematic-floor --tier FGK|giant|metal-poor|MILES`` (2026-12-07, the
#:   shipped file; each calibration star judged leave-one-out): per group the larger of that
#:   floor and the rms of the references' own σ (the benchmark cannot show a smaller error).
#:   High resolution: the 7 FGK and giant spectra covering at least 4 of the model's 7 windows
#:   (floor 34 K / 0.052 / 0; references 64 K / 0.118 / 0.115); metal-poor, used for fits with
#:   [Fe/H] < -1.5 at high resolution: the 4 metal-poor stars; low resolution: the 34 MILES
#:   stars with Teff >= 3800 K.
SYSTEMATIC_FLOOR = {
    "embedded": {
        "high_resolution": {"teff": 90.0, "logg": 0.042, "feh": 0.096},
        "low_resolution": {"teff": 360.0, "logg": 0.64, "feh": 0.72},
    },
    "optical": {
        "high_resolution": {"teff": 64.0, "logg": 0.118, "feh": 0.115},
        "metal_poor": {"teff": 333.0, "logg": 0.30, "feh": 0.276},
        "low_resolution": {"teff": 195.0, "logg": 0.563, "feh": 0.262},
    },
}
#: fitted [Fe/H] (dex) below which a high-resolution fit takes a model's "metal_poor" floor
METAL_POOR_FEH = -1.5


def file_resolution(spectrum) -> float | None:
    """R the file records (``meta.extra["resolution"]``), or None; for a list of exposures
    the first one's."""
    if isinstance(spectrum, list | tuple):
        return file_resolution(spectrum[0]) if spectrum else None
    meta = getattr(spectrum, "meta", None)
    value = (getattr(meta, "extra", None) or {}).get("resolution")
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def least_squares_defaults() -> dict[str, Any]:
    """Keyword arguments of :func:`~photosphere.infer.optimize.fit` beyond the observation
    setup: clipping and the misfit jitter."""
    return {"clip": CLIP, "misfit": MISFIT}


def default_settings(**fields: Any) -> ObservationSettings:
    """The protocol's observation setup (the spline continuum), with ``fields`` overriding."""
    return ObservationSettings(**{"continuum_knot_spacing": CONTINUUM_KNOT_SPACING, **fields})


def with_file_resolution(settings: ObservationSettings | None, spectrum
                         ) -> tuple[ObservationSettings, str]:
    """``settings`` with R from the file when they have none; and where R came from:
    ``"given"``, ``"file"`` or ``"none"`` (no LSF is applied: the model is compared at its own
    resolution)."""
    settings = settings if settings is not None else default_settings()
    if settings.resolution is not None:
        return settings, "given"
    r = file_resolution(spectrum)
    if r is None:
        return settings, "none"
    return dataclasses.replace(settings, resolution=r), "file"


def noted(result, source: str):
    """``result`` with ``provenance["resolution_source"]`` set."""
    return dataclasses.replace(result, provenance={**result.provenance,
                                                   "resolution_source": source})


def model_noted(result, choice):
    """``result`` with ``provenance["model"] = {"name": ..., "reason": ...}``: which model
    fitted it and why (a :class:`~photosphere.grids.default_model.ModelChoice`); a spectrum
    covering too few of the optical model's windows for its σ_sys is flagged
    ``flags["partial_coverage"] = {"windows_covered": n, "windows": 7}``."""
    flags = dict(result.flags)
    if getattr(choice, "partial_coverage", False):
        flags["partial_coverage"] = {"windows_covered": choice.covered,
                                     "windows": choice.n_windows}
    return dataclasses.replace(result, flags=flags,
                               provenance={**result.provenance, "model": choice.as_dict()})


def merge_defaults(kwargs: Mapping[str, Any], mcmc: bool = False) -> dict[str, Any]:
    """``kwargs`` of a fit/sample call completed with the protocol where the caller is silent:
    ``settings`` (the spline continuum) unless observation fields or ``settings`` are given,
    and, for least squares, clipping and the jitter unless given."""
    out = dict(kwargs)
    setting_fields = {f.name for f in dataclasses.fields(ObservationSettings)}
    if "settings" not in out:
        given = {k: out.pop(k) for k in list(out) if k in setting_fields}
        if "continuum_degree" in given and given["continuum_degree"] is None:
            given.setdefault("continuum_knot_spacing", None)  # no continuum: no spline either
        out["settings"] = default_settings(**given)
    if not mcmc:
        for key, value in least_squares_defaults().items():
            out.setdefault(key, value)
    return out


def shipped_model_name(model) -> str | None:
    """``"embedded"`` or ``"optical"`` when ``model`` is that shipped model as loaded (the
    embedded grid uncorrected, the optical model with its full calibration), else None."""
    from pathlib import Path

    from ..grids.load import DATA_DIR, SHIPPED_MODELS
    from ..grids.presets import default_grid_path

    path = getattr(model, "path", None)
    if path is None:
        return None
    kinds = {"embedded": (("GridInterpolator",), default_grid_path),
             "optical": (("CalibratedModel", "TiedLabels"),
                         lambda: DATA_DIR / SHIPPED_MODELS["optical"])}
    for name, (types, where) in kinds.items():
        if type(model).__name__ not in types:
            continue
        try:
            if Path(path).resolve() == Path(where()).resolve():
                return name
        except OSError:
            return None
    return None


def systematic_floor_for(model, resolution: float | None, feh: float | None = None
                         ) -> dict[str, float] | None:
    """The measured σ_sys (:data:`SYSTEMATIC_FLOOR`) for ``model`` at this resolving power and
    fitted [Fe/H] (dex; below :data:`METAL_POOR_FEH` a model's ``metal_poor`` floor, where it
    has one, at high resolution), or None when none was measured for that model (only the
    shipped models, as loaded, have one: :func:`shipped_model_name`)."""
    name = shipped_model_name(model)
    if name is None:
        return None
    floors = SYSTEMATIC_FLOOR[name]
    if resolution is not None and resolution < LOW_RESOLUTION:
        return dict(floors["low_resolution"])
    if feh is not None and feh < METAL_POOR_FEH and "metal_poor" in floors:
        return dict(floors["metal_poor"])
    return dict(floors["high_resolution"])


def with_systematic_floor(result, model, resolution: float | None):
    """``result`` with the model's measured σ_sys added in quadrature
    (:func:`~photosphere.infer.optimize.sigma_floor`: σ_stat, σ_sys and σ_total in the JSON),
    or unchanged, noted in ``flags["systematic_floor"] = None``, when none was measured."""
    from .optimize import sigma_floor

    feh = (getattr(result, "values", None) or {}).get("feh")
    floor = systematic_floor_for(model, resolution, None if feh is None else float(feh))
    if floor is None:
        return dataclasses.replace(result, flags={**result.flags, "systematic_floor": None})
    return sigma_floor(result, floor)
