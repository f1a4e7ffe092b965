"""validate-sun / validate-star: window sets, per-window figures, the second star, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from _synth_fixtures import analytic_synthetic

from photosphere.cli import main
from photosphere.errors import BenchmarkError, MissingFileError, OutOfGridError
from photosphere.grids.synth import validation, validation_stars
from photosphere.grids.synth.validation_fit import Broadener
from photosphere.grids.synth.validation_stars import ValidationStar, WindowSet

# two narrow windows: metal lines, and a broad "Hα" (a straight continuum there)
WINDOWS = ((5100.0, 5110.0), (6550.0, 6575.0))
LINES = {0: ([5101.2, 5102.9, 5104.4, 5105.1, 5107.3, 5108.8], [0.6, 0.3, 0.8, 0.2, 0.5, 0.4],
             0.03),
         1: ([6556.0, 6562.8, 6569.1, 6572.4], [0.3, 0.6, 0.4, 0.5], [0.03, 2.5, 0.03, 0.03])}
PROCYON_ROW = ("file,star,instrument,resolution,teff,teff_err,logg,logg_err,feh,feh_err,vsini,"
               "label_source,notes\nhires/harps_procyon.fits,Procyon (F5 IV-V),HARPS,115000,6554,"
               "84,3.99,0.02,0.01,0.08,,GBS v2,not normalised\n")


def _synthetic(k: int, lo: float, hi: float):
    return analytic_synthetic(np.round(np.arange(lo, hi, 0.01), 2), *LINES[k])


def _synthetics():
    return [_synthetic(k, lo - 5.0, hi + 5.0) for k, (lo, hi) in enumerate(WINDOWS)]


def _observe(path, rng, *, noise=(1e-3, 1e-3), normalised=True):
    """Write the broadened analytic star over WINDOWS (two columns, Å and flux) to ``path``."""
    waves, fluxes = [], []
    for k, (lo, hi) in enumerate(WINDOWS):
        wave = np.round(np.arange(lo, hi, 0.01), 2)
        flux = Broadener(_synthetic(k, lo - 5.0, hi + 5.0), wave, 0.5, 1.9)(80000.0, 3.0, 0.4)
        scale = 1.0 if normalised else 0.7 + 0.002 * (wave - lo)
        waves.append(wave)
        fluxes.append(flux * scale + rng.normal(0.0, noise[k], wave.size))
    np.savetxt(path, np.column_stack([np.concatenate(waves), np.concatenate(fluxes)]))
    return path


def _star(path, normalised: bool) -> ValidationStar:
    return ValidationStar("Sun" if normalised else "Test star", path,
                          {"teff": 5772.0, "logg": 4.44, "feh": 0.0, "alpha": 0.0, "vmic": 1.0},
                          1.9, normalised, "test")


def test_per_window_figures_and_uncovered_windows(tmp_path, rng):
    observed = _observe(tmp_path / "star.txt", rng, normalised=False)
    wset = WindowSet("test", (*WINDOWS, (7000.0, 7010.0)), "auto", True)
    result = validation.validate_star(_star(observed, normalised=False), windows=wset,
                                      synthetic=_synthetics())
    assert result.passes and [w.window for w in result.windows] == list(WINDOWS)
    assert result.uncovered == ((7000.0, 7010.0),)
    assert [w.continuum for w in result.windows] == ["spline 50 Å", "Legendre 1 (Balmer)"]
    assert result.rv == pytest.approx(0.4, abs=0.05)
    for figures in result.windows:  # normalised scale: noise 1e-3 on a 0.7-0.75 continuum
        assert figures.pearson_r > 0.999 and figures.median_abs_residual < 2.5e-3
    assert result.overall.n_pixels == sum(w.n_pixels for w in result.windows)
    assert result.wavelength.shape == result.model.shape == result.window_index.shape
    summary = result.summary()
    assert summary["uncovered_windows"] == [[7000.0, 7010.0]] and len(summary["windows"]) == 2
    assert [w["passes"] for w in summary["windows"]] == [True, True] and summary["passes"]


def test_a_failing_window_fails_the_star_and_shows_in_the_table(tmp_path, rng, monkeypatch,
                                                                capsys):
    """The CLI's table: one row per window and one for all; exit 1 when any window fails."""
    observed = _observe(tmp_path / "sun.txt", rng, noise=(0.05, 1e-3))
    calls = []

    def fake_synthesize(teff, logg, feh, alpha, vmic, *, wavelength_min, wavelength_max, step,
                        atmosphere, molecules):
        calls.append((wavelength_min, wavelength_max, atmosphere, molecules))
        return _synthetic(len(calls) - 1, wavelength_min, wavelength_max)

    monkeypatch.setattr(validation, "synthesize", fake_synthesize)
    monkeypatch.setitem(validation_stars.WINDOW_SETS, "embedded",
                        WindowSet("embedded", WINDOWS, "atlas9", False))
    status = main(["grid", "validate-sun", "--windows", "embedded", "--molecules",
                   "--observed", str(observed), "--plot", str(tmp_path / "sun.png")])
    text = capsys.readouterr().out
    assert status == 1
    assert calls == [(5095.0, 5115.0, "atlas9", True), (6545.0, 6580.0, "atlas9", True)]
    rows = {line.split()[0]: line for line in text.splitlines()
            if line[:1].isdigit() or line.startswith("all")}
    assert "FAIL" in rows["5100-5110"] and "PASS" in rows["6550-6575"]
    assert "all" in rows and "verdict:              FAIL" in text
    assert (tmp_path / "sun.png").stat().st_size > 10_000



def test_unknown_star_and_window_set_are_typed_errors(tmp_path, capsys):
    with pytest.raises(BenchmarkError, match="choose from sun, procyon"):
        validation_stars.validation_star("vega", tmp_path)
    with pytest.raises(BenchmarkError, match="choose from optical, embedded"):
        validation_stars.window_set("infrared")
    assert main(["grid", "validate-star", "vega", "--data-dir", str(tmp_path)]) == 2
    assert "no validation star 'vega'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["grid", "validate-star", "sun", "--windows", "infrared"])
    assert exc.value.code == 2


def test_procyon_labels_come_from_the_table_and_a_missing_file_is_reported(tmp_path, capsys):
    with pytest.raises(BenchmarkError, match="no labels table"):
        validation_stars.validation_star("procyon", tmp_path)
    (tmp_path / "stars").mkdir()
    (tmp_path / "stars" / "labels.csv").write_text(PROCYON_ROW)
    star = validation_stars.validation_star("Procyon", tmp_path)
    assert star.labels == {"teff": 6554.0, "logg": 3.99, "feh": 0.01, "alpha": 0.0,
                           "vmic": validation_stars.PROCYON_VMIC}
    assert star.vsini == validation_stars.PROCYON_VSINI and not star.normalised
    assert star.spectrum == tmp_path / "stars" / "hires" / "harps_procyon.fits"
    with pytest.raises(MissingFileError, match=r"harps_procyon\.fits does not exist"):
        validation.validate_star(star, synthetic=_synthetics())
    assert main(["grid", "validate-star", "procyon", "--data-dir", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_syntheses_and_observations_that_miss_the_windows(tmp_path, rng):
    observed = _observe(tmp_path / "sun.txt", rng)
    wset = WindowSet("test", WINDOWS, "auto", True)
    short = analytic_synthetic(np.round(np.arange(5101.0, 5112.0, 0.01), 2), [5105.0], [0.5])
    with pytest.raises(OutOfGridError, match="must cover 5098-5112"):
        validation.validate_star(_star(observed, True), windows=wset, synthetic=[short])
    elsewhere = WindowSet("test", ((4000.0, 4100.0),), "auto", True)
    with pytest.raises(OutOfGridError, match="covers none of the test windows"):
        validation.validate_star(_star(observed, True), windows=elsewhere,
                                 synthetic=_synthetics())


@pytest.mark.realdata
def test_procyon_reads_from_the_shared_data(shared_data):
    star = validation_stars.validation_star("procyon", shared_data)
    if not star.spectrum.exists():
        pytest.skip(f"real data file {star.spectrum} is absent")
    assert (star.labels["teff"], star.labels["logg"], star.labels["feh"]) == (6554.0, 3.99, 0.01)
    wave, flux = validation_stars.read_spectrum(star)
    assert np.all(flux > 0) and np.all(np.diff(wave) > 0)
    assert wave[0] < 4821.0 and wave[-1] > 6610.0
    # the HARPS CCD gap (zeros in the file) is left out, not compared
    assert not np.any((wave > 5306.0) & (wave < 5337.0))
    covered, _, uncovered = validation_stars.split_windows(
        wave, flux, validation_stars.WINDOW_SETS["optical"].windows)
    assert len(covered) == 7 and not uncovered
