"""The validity gate: spectra that cannot be a star are refused before any engine runs."""

from __future__ import annotations

import numpy as np
import pytest

from analytic_model import AnalyticModel, simulate
from photosphere import Spectrum
from photosphere.errors import InvalidSpectrumError
from photosphere.infer.batch import prepare_spectrum
from photosphere.infer.result import Result
from photosphere.infer.validity import (
    MIN_PIXELS,
    check_spectrum,
    label_warnings,
    line_contrast,
    result_warnings,
)
from photosphere.spectrum import SpectrumMeta

TRUTH = {"teff": 5800.0, "logg": 4.3, "feh": -0.2, "vsini": 5.0, "rv": 3.0}


def star(n=600, snr=60, seed=0, wave=None):
    wave = np.linspace(5005, 5035, n) if wave is None else wave
    return simulate(AnalyticModel(5000.0, 5040.0, n_lines=20), TRUTH, wave, resolution=40000,
                    snr=snr, seed=seed)[0]


def test_a_simulated_star_passes():
    check_spectrum(star())
    check_spectrum(star().replace(sigma=None))  # S/N then estimated from the flux
    assert line_contrast(star()) > 2


@pytest.mark.parametrize("flux, match", [
    (np.zeros(600), "median flux is 0"),
    (-np.abs(star().flux) * 1e5, "median flux is -"),
    (np.ones(600), "constant"),
])
def test_zero_negative_and_flat_flux_are_refused(flux, match):
    s = Spectrum(np.linspace(5005, 5035, 600), flux)
    with pytest.raises(InvalidSpectrumError, match=match):
        check_spectrum(s, "x.fits")


def test_pure_noise_has_no_lines(rng):
    noise = Spectrum(np.linspace(5005, 5035, 2000), 1.0 + rng.normal(0, 0.05, 2000),
                     np.full(2000, 0.05))
    with pytest.raises(InvalidSpectrumError, match="no stellar lines"):
        check_spectrum(noise)


def test_low_snr_and_few_pixels_are_refused(rng):
    with pytest.raises(InvalidSpectrumError, match="S/N per pixel is"):
        check_spectrum(star(snr=1.5, seed=3))
    few = star(n=10)
    with pytest.raises(InvalidSpectrumError, match=f"at least {MIN_PIXELS}"):
        check_spectrum(few)


def test_header_instrument_must_cover_the_wavelengths():
    optical = star()
    check_spectrum(optical.replace(meta=SpectrumMeta(instrument="HARPS")))
    with pytest.raises(InvalidSpectrumError, match=r"'APOGEE'.*15000-17100 Å"):
        check_spectrum(optical.replace(meta=SpectrumMeta(instrument="APOGEE")))


def test_a_telluric_transmission_is_not_a_star():
    tapas = star().replace(meta=SpectrumMeta(instrument="TAPAS",
                                             extra={"product": "TAPAS transmission"}))
    with pytest.raises(InvalidSpectrumError, match="telluric transmission"):
        check_spectrum(tapas)


def test_prepare_spectrum_applies_the_gate_and_wraps_reader_errors(tmp_path):
    from astropy.table import Table

    flat = tmp_path / "flat.txt"
    np.savetxt(flat, np.column_stack([np.linspace(5005, 5035, 600), np.ones(600)]),
               header="medium: air\nwavelength flux")
    with pytest.raises(InvalidSpectrumError, match="constant"):
        prepare_spectrum(str(flat))
    # a FITS table with a string wavelength column: a clear error, not a ValueError traceback
    bad = tmp_path / "strings.fits"
    Table({"wavelength": np.array([f"w{i}" for i in range(300)]),
           "flux": np.ones(300)}).write(bad)
    from photosphere.errors import FileFormatError

    with pytest.raises(FileFormatError, match=r"not numbers|could not be read as a spectrum"):
        prepare_spectrum(str(bad))
    with pytest.raises(Exception, match="below 3"):
        prepare_spectrum(str(_text(tmp_path / "ok.txt", star())), snr=1.0)


def _text(path, spec):
    np.savetxt(path, np.column_stack([spec.wavelength, spec.flux]),
               header="medium: air\nwavelength flux")
    return path


def _result(chi2=900.0, at_bound=()):
    return Result(values={"teff": 5800.0}, sigma={"teff": 30.0}, free=("teff",),
                  covariance=np.eye(1), chi2=chi2, n_pixels=901, n_parameters=1,
                  flags={"converged": True, "at_bound": list(at_bound)})


def test_result_warnings():
    assert result_warnings(_result()) == []
    assert "far above 1" in result_warnings(_result(chi2=4e5 * 900))[0]
    assert "teff at a bound" in result_warnings(_result(at_bound=["teff"]))[0]
    assert label_warnings({"teff": (-91722.0, 1.0)}, {"teff": (4000.0, 7000.0)})
    assert not label_warnings({"teff": (5000.0, 1.0)}, {"teff": (4000.0, 7000.0)})


def test_mcmc_posterior_against_an_edge_is_at_bound():
    from photosphere.infer.mcmc import _at_bound
    from photosphere.infer.parameters import Parameters

    params = Parameters(("teff", "logg", "vsini"), {"teff": (4000.0, 7000.0),
                                                    "logg": (3.0, 5.0), "vsini": (0.0, 100.0)})
    assert _at_bound(np.array([4010.0, 4.0, 0.1]), params) == ["teff"]   # vsini 0 is physical
    assert _at_bound(np.array([5800.0, 4.99, 50.0]), params) == ["logg"]
    assert _at_bound(np.array([5800.0, 4.0, 5.0]), params) == []


def test_the_mismatch_flag_scales_chi2_by_the_noise():
    """χ²_red 222 is a 3.8 % mismatch for the UVES Sun at S/N ~400 (not flagged) but 15 % at
    S/N 100 (flagged)."""
    from photosphere.infer.result import Segment
    from photosphere.infer.validity import model_mismatch

    def at(snr, chi2_red):
        n = 1001
        seg = Segment(np.linspace(5000, 5100, n), np.ones(n), np.full(n, 1 / snr),
                      np.zeros(n, bool), np.ones(n), np.ones(n))
        return Result(values={"teff": 5800.0}, sigma={"teff": 30.0}, free=("teff",),
                      covariance=np.eye(1), chi2=chi2_red * (n - 1), n_pixels=n, n_parameters=1,
                      segments=(seg,), flags={"converged": True, "at_bound": []})

    assert model_mismatch(at(400, 222.0)) == pytest.approx(np.sqrt(221) / 400)
    assert result_warnings(at(400, 222.0)) == []
    assert "misses the data by 15%" in result_warnings(at(100, 222.0))[0]


def test_the_mismatch_of_a_jitter_fit_is_its_jitter():
    """A fit with the misfit jitter has χ²_red = 1 by construction; the jitter measured the
    mismatch, and the warning quotes the χ²_red before it."""
    from photosphere.infer.result import Segment
    from photosphere.infer.validity import model_mismatch

    n = 501
    seg = Segment(np.linspace(5000, 5100, n), np.ones(n), np.full(n, 0.01), np.zeros(n, bool),
                  np.ones(n), np.ones(n))
    res = Result(values={"teff": 5800.0}, sigma={"teff": 30.0}, free=("teff",),
                 covariance=np.eye(1), chi2=float(n - 1), n_pixels=n, n_parameters=1,
                 segments=(seg,), flags={"converged": True, "at_bound": [], "jitter": 0.14,
                                         "chi2_reduced_before_jitter": 197.0})
    assert model_mismatch(res) == pytest.approx(0.14)
    (warning,) = result_warnings(res)
    assert "chi2_reduced 197" in warning and "14%" in warning
    calm = Result(**{**res.__dict__, "flags": {**res.flags, "jitter": 0.02}})
    assert result_warnings(calm) == []


def test_a_label_pinned_on_a_grid_node_is_warned_about():
    """The embedded grid's Teff nodes are 250 K apart: 5750.0 ± 1 K is pinned, 5750 ± 40 K or
    5800 ± 1 K is measured; the fit's own σ (before a systematic floor) decides."""
    from photosphere.grids.load import load_grid_model
    from photosphere.infer.validity import grid_nodes, pinned_labels

    grid = load_grid_model()
    nodes = grid_nodes(grid)
    assert 5750.0 in nodes["teff"] and np.allclose(np.diff(nodes["teff"]), 250.0)
    assert pinned_labels({"teff": (5750.0, 1.0)}, nodes) == ["teff"]
    assert pinned_labels({"teff": (5750.0, 40.0), "logg": (4.37, 0.001)}, nodes) == []
    assert pinned_labels({"teff": (5800.0, 1.0)}, nodes) == []
    res = Result(values={"teff": 5750.0, "logg": 4.37, "vsini": 2.0},
                 sigma={"teff": 90.0, "logg": 0.05, "vsini": 0.3}, free=("teff", "logg", "vsini"),
                 covariance=np.eye(3), chi2=100.0, n_pixels=110, n_parameters=3,
                 flags={"converged": True, "at_bound": [], "sigma_stat": {"teff": 1.0}})
    (warning,) = result_warnings(res, model=grid)
    assert warning.startswith("teff on a grid node")
    assert result_warnings(res) == []               # no model: nothing to check against
