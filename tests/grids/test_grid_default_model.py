"""The model a fit uses when none is named: the shipped optical model where the spectrum covers
at least two of its windows by half their width, else the embedded grid."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from photosphere.grids import default_model
from photosphere.grids.default_model import (
    EMBEDDED,
    OPTICAL,
    ModelFactory,
    choose_model,
    covered_windows,
    given_model,
    observed_ranges,
)
from photosphere.grids.interpolate import GridInterpolator
from photosphere.grids.load import DATA_DIR, SHIPPED_MODELS, load_grid_model
from photosphere.spectrum import EchelleSpectrum, Spectrum

HAS_OPTICAL = (DATA_DIR / SHIPPED_MODELS["optical"]).is_file()
needs_optical = pytest.mark.skipif(not HAS_OPTICAL,
                                   reason="this installation does not carry the optical emulator")
#: the optical model's windows (Å), as its file has them (training_set.OPTICAL_WINDOWS)
WINDOWS = ((4821.0, 4901.0), (5140.0, 5340.0), (5860.0, 5910.0), (6100.0, 6180.0),
           (6230.0, 6260.0), (6400.0, 6440.0), (6510.0, 6610.0))


def _spectrum(lo: float, hi: float, n: int = 4000, mask=None) -> Spectrum:
    wave = np.linspace(lo, hi, n)
    return Spectrum(wave, np.ones(n), np.full(n, 0.01), mask=mask, medium="air")


def test_a_window_counts_when_half_of_it_is_observed():
    window = [(5000.0, 5100.0)]
    assert covered_windows([(4900.0, 5050.0)], window) == 1          # exactly half
    assert covered_windows([(4900.0, 5049.0)], window) == 0
    assert covered_windows([(5060.0, 5200.0)], window) == 0          # 40 %
    # two orders of 30 Å each, overlapping by 10 Å: 50 Å, counted once
    assert covered_windows([(5000.0, 5030.0), (5020.0, 5050.0)], window) == 1
    assert covered_windows([(5000.0, 5030.0), (5005.0, 5035.0)], window) == 0
    assert covered_windows([(5000.0, 5030.0), (5070.0, 5100.0)], window) == 1
    assert covered_windows([], window) == 0
    assert covered_windows([(3000.0, 9000.0)], WINDOWS) == 7
    assert covered_windows([(5050.0, 5350.0)], WINDOWS) == 1       # the embedded grid's range


def test_observed_ranges_are_the_good_pixels_of_each_order_and_exposure():
    mask = np.zeros(4000, bool)
    mask[:1000] = True                                               # the blue quarter is bad
    assert observed_ranges(_spectrum(5000.0, 6000.0, mask=mask)) == [
        pytest.approx((5250.06, 6000.0), abs=0.01)]
    wave = np.stack([np.linspace(4800.0, 4900.0, 50), np.linspace(5100.0, 5200.0, 50)])
    echelle = EchelleSpectrum(wave, np.ones_like(wave), np.full_like(wave, 0.01), medium="air")
    assert observed_ranges(echelle) == [(4800.0, 4900.0), (5100.0, 5200.0)]
    assert observed_ranges([echelle, _spectrum(6500.0, 6600.0)])[-1] == (6500.0, 6600.0)
    assert observed_ranges(_spectrum(5000.0, 5100.0, mask=np.ones(4000, bool))) == []
    # a gap inside one order (a spectrum merged from two settings, a masked stretch) splits it:
    # 4221-4786 and 5364-6316 Å do not cover Hβ (4821-4901) or Mg b (5140-5340)
    merged = np.r_[np.linspace(4221.0, 4786.0, 2000), np.linspace(5364.0, 6316.0, 3000)]
    spec = Spectrum(merged, np.ones_like(merged), np.full_like(merged, 0.01), medium="air")
    assert observed_ranges(spec) == [(4221.0, 4786.0), (5364.0, 6316.0)]
    mask = np.zeros(4000, bool)
    mask[1000:1200] = True  # 50 Å masked in a 0.25 Å-step spectrum: a gap
    assert len(observed_ranges(_spectrum(5000.0, 6000.0, mask=mask))) == 2
    mask[1002:1200] = False  # 0.75 Å masked (a clipped line): not a gap
    assert len(observed_ranges(_spectrum(5000.0, 6000.0, mask=mask))) == 1


@needs_optical
def test_the_optical_windows_are_read_from_the_shipped_file():
    windows = default_model.model_windows(default_model.optical_model_path())
    assert np.allclose(windows, WINDOWS, atol=0.05)


@needs_optical
@pytest.mark.parametrize(("lo", "hi", "name", "n"), [
    (5050.0, 5350.0, EMBEDDED, 1),        # what the embedded grid was made for
    (5000.0, 5600.0, EMBEDDED, 1),
    (6450.0, 6700.0, EMBEDDED, 1),        # Hα alone
    (3800.0, 6900.0, OPTICAL, 7),         # HARPS
    (3500.0, 7400.0, OPTICAL, 7),         # MILES
    (4800.0, 6800.0, OPTICAL, 7),         # UVES
    (4800.0, 5400.0, OPTICAL, 2),         # Hβ and Mg b
    (4861.0, 5241.0, OPTICAL, 2),         # half of each, just
    (4862.0, 5241.0, EMBEDDED, 1),        # Hβ just under half
])
def test_the_choice_follows_the_spectrum_range(lo, hi, name, n):
    choice = choose_model(_spectrum(lo, hi))
    assert choice.name == name
    assert f"covers {n} of" in choice.reason
    assert choice.argument == (None if name == EMBEDDED else OPTICAL)


@needs_optical
def test_the_choice_is_made_on_the_good_pixels_and_all_orders():
    mask = np.zeros(4000, bool)
    mask[(np.linspace(4800.0, 6800.0, 4000) > 5000.0)] = True       # only Hβ is usable
    assert choose_model(_spectrum(4800.0, 6800.0, mask=mask)).name == EMBEDDED
    wave = np.stack([np.linspace(4821.0, 4901.0, 200), np.linspace(6510.0, 6610.0, 200)])
    echelle = EchelleSpectrum(wave, np.ones_like(wave), np.full_like(wave, 0.01), medium="air")
    assert choose_model(echelle).describe() == (
        "optical (shipped emulator; covers 2 of its 7 windows)")
    assert choose_model([_spectrum(4821.0, 4901.0), _spectrum(5140.0, 5340.0)]).name == OPTICAL


def test_line_strengths_and_a_missing_optical_model_keep_the_grid(monkeypatch):
    wide = _spectrum(3800.0, 6900.0)
    choice = choose_model(wide, line_strengths="sun_lines.ecsv")
    assert choice.name == EMBEDDED and "--line-strengths" in choice.reason
    monkeypatch.setattr(default_model, "optical_model_path", lambda: None)
    choice = choose_model(wide)
    assert choice.name == EMBEDDED and "no optical model" in choice.reason


def test_a_named_model_is_used_as_given(tmp_path):
    assert given_model(None) is None
    for name in ("embedded", "grid", "default"):
        choice = given_model(name)
        assert choice.name == EMBEDDED and choice.argument is None and name in choice.reason
        assert isinstance(load_grid_model(name), GridInterpolator)
    assert given_model("optical").argument == OPTICAL
    assert given_model("my.h5").describe() == "my.h5 (given)"
    # a file called "default" in the working directory is a file, not the name
    (tmp_path / "default").write_text("")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        assert given_model("default").argument == "default"


def test_the_factory_chooses_per_spectrum_and_pickles():
    factory = ModelFactory(None, None, loader=lambda name, lines: (name, lines))
    narrow = factory.choose(_spectrum(5050.0, 5350.0))
    assert narrow.name == EMBEDDED
    assert factory.factory(narrow)() == (None, None)
    forced = ModelFactory("grid").choose(_spectrum(3800.0, 6900.0))
    assert forced.name == EMBEDDED and forced.reason == "given: grid"
    again = pickle.loads(pickle.dumps(ModelFactory("optical", None)))
    assert again == ModelFactory("optical", None)
    assert again.factory(again.choose(None)).args == (OPTICAL, None)


@needs_optical
def test_a_spectrum_covering_few_windows_is_flagged_partial_coverage():
    """The optical model's σ_sys were measured on spectra covering 4 of its 7 windows or more:
    a fit of one covering 2 or 3 carries the flag and a warning; one covering all does not."""
    from photosphere.infer.protocol import model_noted
    from photosphere.infer.validity import result_warnings
    from photosphere.result import Result

    result = Result(values={"teff": 5800.0, "logg": 4.4, "feh": 0.0},
                    sigma={"teff": 50.0, "logg": 0.1, "feh": 0.1},
                    free=("teff", "logg", "feh"), covariance=np.eye(3), chi2=100.0,
                    n_pixels=110, n_parameters=3, flags={"converged": True})
    few = choose_model(_spectrum(4800.0, 5400.0))
    assert few.name == OPTICAL and few.covered == 2 and few.partial_coverage
    noted = model_noted(result, few)
    assert noted.flags["partial_coverage"] == {"windows_covered": 2, "windows": 7}
    assert noted.provenance["model"]["windows_covered"] == 2
    assert any("covers 2 of the optical model's 7 windows" in w
               for w in result_warnings(noted))
    full = choose_model(_spectrum(4700.0, 6700.0))
    assert full.covered == 7 and not full.partial_coverage
    assert "partial_coverage" not in model_noted(result, full).flags
    assert not result_warnings(model_noted(result, full))
    assert not choose_model(_spectrum(5050.0, 5350.0)).partial_coverage  # the grid's range
    # named by the user (`--grid optical`, model="optical"): the same count, the same flag
    from photosphere.grids.default_model import ModelFactory, given_model, with_coverage

    named = with_coverage(given_model("optical"), _spectrum(4800.0, 5400.0))
    assert named.reason == "given" and named.covered == 2 and named.partial_coverage
    assert ModelFactory("optical").choose(_spectrum(4800.0, 5400.0)).partial_coverage
    assert not ModelFactory("optical").choose(_spectrum(4700.0, 6700.0)).partial_coverage
    embedded = given_model("embedded")
    assert with_coverage(embedded, _spectrum(4800.0, 5400.0)) == embedded
