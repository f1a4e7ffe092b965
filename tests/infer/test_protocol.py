"""The default protocol for real spectra: what it sets, what callers override, R from the file."""

from __future__ import annotations

import numpy as np
import pytest

from photosphere import Spectrum
from photosphere.grids.load import DATA_DIR, SHIPPED_MODELS
from photosphere.infer.protocol import (
    CLIP,
    CONTINUUM_KNOT_SPACING,
    MISFIT,
    file_resolution,
    merge_defaults,
    with_file_resolution,
)
from photosphere.infer.settings import ObservationSettings
from photosphere.spectrum import SpectrumMeta


def _spectrum(resolution=None):
    wave = np.linspace(5000.0, 5100.0, 200)
    extra = {} if resolution is None else {"resolution": resolution}
    return Spectrum(wave, np.ones_like(wave), np.full_like(wave, 0.01), medium="air",
                    meta=SpectrumMeta(extra=extra))


def test_silent_callers_get_the_protocol():
    kw = merge_defaults({})
    assert kw["settings"].continuum_knot_spacing == CONTINUUM_KNOT_SPACING
    assert kw["clip"] == CLIP and kw["misfit"] == MISFIT
    assert "clip" not in merge_defaults({}, mcmc=True)


def test_callers_override_every_part():
    kw = merge_defaults({"clip": 5.0, "misfit": None, "resolution": 40_000,
                         "continuum_knot_spacing": 20.0})
    assert kw["clip"] == 5.0 and kw["misfit"] is None
    assert kw["settings"].resolution == 40_000 and kw["settings"].continuum_knot_spacing == 20.0
    own = ObservationSettings(continuum_degree=3)
    assert merge_defaults({"settings": own})["settings"] is own
    none = merge_defaults({"continuum_degree": None})["settings"]
    assert none.continuum_degree is None and none.continuum_knot_spacing is None


def test_resolution_comes_from_the_file_only_when_none_is_given():
    assert file_resolution(_spectrum(115_000)) == 115_000
    assert file_resolution(_spectrum()) is None
    assert file_resolution(_spectrum("n/a")) is None
    assert file_resolution([_spectrum(60_000), _spectrum()]) == 60_000
    settings, source = with_file_resolution(ObservationSettings(), _spectrum(115_000))
    assert settings.resolution == 115_000 and source == "file"
    settings, source = with_file_resolution(ObservationSettings(resolution=50_000),
                                            _spectrum(115_000))
    assert settings.resolution == 50_000 and source == "given"
    settings, source = with_file_resolution(None, _spectrum())
    assert settings.resolution is None and source == "none"
    assert settings.continuum_knot_spacing == CONTINUUM_KNOT_SPACING


@pytest.mark.parametrize("argv, expect", [
    ([], {"clip": CLIP, "misfit": MISFIT, "knots": CONTINUUM_KNOT_SPACING}),
    (["--no-clip", "--misfit", "none", "--continuum-knots", "0"],
     {"clip": None, "misfit": None, "knots": None}),
    (["--clip", "4", "--continuum-knots", "25"], {"clip": 4.0, "misfit": MISFIT, "knots": 25.0}),
])
def test_the_command_line_builds_the_protocol(argv, expect):
    from photosphere.cli import build_parser
    from photosphere.cli.fit import _fit_kwargs

    args = build_parser().parse_args(["fit", "star.fits", *argv])
    kw = _fit_kwargs(args)
    assert kw.get("clip") == expect["clip"] and kw.get("misfit") == expect["misfit"]
    assert kw["settings"].continuum_knot_spacing == expect["knots"]


def _result():
    from photosphere.result import Result

    return Result(values={"teff": 5800.0, "logg": 4.4, "feh": 0.0, "vsini": 2.0},
                  sigma={"teff": 10.0, "logg": 0.01, "feh": 0.01, "vsini": 0.5},
                  free=("teff", "logg", "feh", "vsini"), covariance=np.eye(4), chi2=100.0,
                  n_pixels=110, n_parameters=5, flags={"converged": True})


def test_the_embedded_grid_gets_its_measured_floor_and_other_models_none(tmp_path):
    from analytic_model import AnalyticModel
    from photosphere.grids.load import load_grid_model
    from photosphere.infer.protocol import SYSTEMATIC_FLOOR, with_systematic_floor

    grid = load_grid_model()
    high = with_systematic_floor(_result(), grid, 115_000)
    floor = SYSTEMATIC_FLOOR["embedded"]["high_resolution"]
    assert high.sigma["teff"] == pytest.approx(np.hypot(10.0, floor["teff"]))
    assert high.sigma["vsini"] == 0.5                   # not a label the floor was measured on
    doc = high.to_dict()["labels"]["feh"]
    assert doc["sigma_stat"] == 0.01 and doc["sigma_sys"] == floor["feh"]
    low = with_systematic_floor(_result(), grid, 2200)
    assert low.flags["systematic_floor"] == SYSTEMATIC_FLOOR["embedded"]["low_resolution"]
    other = with_systematic_floor(_result(), AnalyticModel(5000, 5030), 115_000)
    assert other.sigma == _result().sigma and other.flags["systematic_floor"] is None


@pytest.mark.skipif(not (DATA_DIR / SHIPPED_MODELS["optical"]).is_file(),
                    reason="this installation does not carry the optical emulator")
def test_the_optical_model_gets_its_own_floor_and_its_variants_none(tmp_path):
    import shutil

    from photosphere.grids.load import load_grid_model
    from photosphere.infer.protocol import (
        SYSTEMATIC_FLOOR,
        shipped_model_name,
        systematic_floor_for,
        with_systematic_floor,
    )

    optical = load_grid_model("optical")
    assert shipped_model_name(optical) == "optical"
    assert shipped_model_name(load_grid_model()) == "embedded"
    floors = SYSTEMATIC_FLOOR["optical"]
    assert systematic_floor_for(optical, 115_000) == floors["high_resolution"]
    assert systematic_floor_for(optical, 2200) == floors["low_resolution"]
    assert systematic_floor_for(optical, None) == floors["high_resolution"]  # as the grid's
    # a metal-poor fit at high resolution takes the metal-poor stars' floor; at low resolution
    # MILES's (its metal-poor stars are among those it was measured on)
    assert systematic_floor_for(optical, 115_000, feh=-2.5) == floors["metal_poor"]
    assert systematic_floor_for(optical, 115_000, feh=-1.0) == floors["high_resolution"]
    assert systematic_floor_for(optical, 2200, feh=-2.5) == floors["low_resolution"]
    assert "metal_poor" not in SYSTEMATIC_FLOOR["embedded"]
    assert systematic_floor_for(load_grid_model(), 115_000, feh=-1.9) == (
        SYSTEMATIC_FLOOR["embedded"]["high_resolution"])
    assert floors != SYSTEMATIC_FLOOR["embedded"]
    high = with_systematic_floor(_result(), optical, 60_000)
    assert high.sigma["teff"] == pytest.approx(np.hypot(10.0, floors["high_resolution"]["teff"]))
    import dataclasses

    poor = dataclasses.replace(_result(), values={**_result().values, "feh": -2.6})
    poor = with_systematic_floor(poor, optical, 60_000)
    assert poor.sigma["teff"] == pytest.approx(np.hypot(10.0, floors["metal_poor"]["teff"]))
    # the calibration without a star (the benchmark's leave-one-out) is not the shipped model
    star = optical.calibration.star_names[0]
    assert systematic_floor_for(optical.without(star), 115_000) is None
    # nor is the same file elsewhere: the floor belongs to the installed model
    copy = shutil.copy(DATA_DIR / SHIPPED_MODELS["optical"], tmp_path / "copy.h5")
    assert systematic_floor_for(load_grid_model(str(copy)), 115_000) is None
