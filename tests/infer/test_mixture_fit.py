"""Fitting two-component models through the general fitter: recovery, MCMC, model comparison,
the CLI. Synthetic spectra from the embedded grid over a narrow window (fast)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from photosphere import cli
from photosphere.errors import FitError
from photosphere.grids.interpolate import GridInterpolator
from photosphere.grids.presets import default_grid_path
from photosphere.infer.mixture import fit_mixture, simulate
from photosphere.infer.selection import bic, compare_models, laplace_log_evidence
from photosphere.models.mixture import BinaryModel, SpotModel
from photosphere.result import Result

SPOTS = {"teff": 5500.0, "teff_spot": 4500.0, "logg": 4.5, "feh": 0.0, "filling_factor": 0.4,
         "vsini": 6.0, "rv": 12.0}
WAVE = np.exp(np.arange(np.log(5150.0), np.log(5250.0), 2.0 / 299792.458))


@pytest.fixture(scope="module")
def grid():
    torch.set_num_threads(1)
    return GridInterpolator(default_grid_path())


def _result(chi2: float, free: tuple[str, ...], sigma: float, n_cont: int = 3) -> Result:
    values = {n: 0.5 for n in free}
    return Result(values=values, sigma={n: sigma for n in free}, free=free,
                  covariance=np.eye(len(free)) * sigma ** 2, chi2=chi2, n_pixels=1000,
                  n_parameters=len(free) + n_cont)


def test_bic_and_laplace_follow_their_formulas():
    single = _result(1200.0, ("a", "b"), 0.01)
    double = _result(1000.0, ("a", "b", "c"), 0.02)
    assert bic(single) == pytest.approx(1200.0 + 5 * np.log(1000))
    bounds = {n: (0.0, 1.0) for n in "abc"}
    z, ok = laplace_log_evidence(double, bounds)
    assert ok
    assert z == pytest.approx(-500.0 + 1.5 * np.log(2 * np.pi) + 3 * np.log(0.02))
    cmp = compare_models(single, double, bounds, bounds)
    assert cmp.delta_chi2 == 200.0
    assert cmp.delta_bic == pytest.approx(200.0 - np.log(1000))
    assert cmp.verdict().startswith("two components")
    # a parameter on its bound makes the Gaussian approximation unreliable
    edge = Result(**{**double.__dict__, "values": {"a": 0.5, "b": 0.5, "c": 0.0}})
    assert not laplace_log_evidence(edge, bounds)[1]
    with pytest.raises(FitError, match="different pixels"):
        compare_models(single, Result(**{**double.__dict__, "n_pixels": 999}), bounds, bounds)


@pytest.mark.slow
def test_spots_are_recovered_and_preferred_over_one_star(grid):
    model = SpotModel(grid)
    obs = simulate(model, SPOTS, WAVE, resolution=50000, snr=150, seed=7)
    out = fit_mixture(model, obs, resolution=50000)
    r = out.result
    assert r.converged
    assert abs(r.values["filling_factor"] - 0.4) < 0.05
    assert abs(r.values["teff_spot"] - 4500.0) < 150.0
    assert abs(r.values["filling_factor"] - 0.4) < 4 * r.sigma["filling_factor"]
    assert r.chi2_reduced == pytest.approx(1.0, abs=0.1)
    cmp = out.compare()
    assert cmp.delta_bic > 10 and cmp.delta_chi2 > 0
    one = out.to_result()  # the one Result type, with the single-star fit and the comparison
    assert one.values == r.values and one.flags["comparison"] == cmp.to_dict()
    assert one.flags["single_star"]["teff"]["value"] == out.single.values["teff"]
    light = out.derived(n=200)["spot_light_fraction"]
    labels = torch.tensor([[SPOTS[n] for n in model.label_names]], dtype=torch.float64)
    assert np.median(light) == pytest.approx(float(model.spot_light_fraction(labels).mean()),
                                             abs=0.03)


@pytest.mark.slow
def test_binary_recovers_both_stars_and_the_velocity_split(grid):
    model = BinaryModel(grid, share=("feh",))
    truth = {"teff_a": 6000.0, "logg_a": 4.3, "vsini_a": 8.0, "teff_b": 5000.0, "logg_b": 4.6,
             "vsini_b": 4.0, "feh": 0.0, "radius_ratio": 0.8, "delta_rv": -40.0, "rv": 15.0}
    obs = simulate(model, truth, WAVE, resolution=50000, snr=100, seed=8)
    out = fit_mixture(model, obs, resolution=50000)
    r = out.result
    assert abs(r.values["teff_b"] - 5000.0) < 150.0
    assert abs(r.values["delta_rv"] + 40.0) < 1.0
    assert abs(r.values["radius_ratio"] - 0.8) < 0.05
    assert np.median(out.derived(n=100)["rv_b"]) == pytest.approx(-25.0, abs=1.0)
    assert out.single.chi2_reduced > 2 * r.chi2_reduced


@pytest.mark.slow
def test_mcmc_gives_samples_and_a_corner_plot(grid, tmp_path):
    model = SpotModel(grid)
    obs = simulate(model, SPOTS, WAVE[:1500], resolution=50000, snr=100, seed=9)
    out = fit_mixture(model, obs, resolution=50000, mcmc=True, n_walkers=16, n_steps=12,
                      progress=False, fixed={"logg": 4.5, "feh": 0.0})
    r = out.result
    assert r.method == "mcmc" and r.samples.shape == (16 * 9, 5)
    assert r.free == ("teff", "teff_spot", "filling_factor", "vsini", "rv")
    out.corner(tmp_path / "corner.png", truths=SPOTS)
    assert (tmp_path / "corner.png").stat().st_size > 10_000


@pytest.mark.slow
def test_cli_fits_spots_with_json(grid, tmp_path, capsys):
    model = SpotModel(grid)
    obs = simulate(model, SPOTS, WAVE[:2500], resolution=50000, snr=150, seed=10)
    path = tmp_path / "spotted.txt"
    np.savetxt(path, np.column_stack([obs.wavelength, obs.flux, obs.sigma]),
               header="medium: air\nwavelength flux sigma")
    code = cli.main(["fit", str(path), "--model", "spots", "--resolution", "50000",
                     "--fix", "feh=0", "--json"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    labels = doc["mixture"]["labels"]
    assert abs(labels["filling_factor"]["value"] - 0.4) < 0.08
    assert labels["feh"]["sigma"] is None
    assert doc["comparison"]["delta_bic"] > 10
    assert 0.0 < doc["derived"]["spot_light_fraction"]["median"] < 0.4
    assert doc["grid"] == {"name": "embedded",
                           "reason": "default grid; --model spots needs a grid with continua"}


def test_the_optical_model_cannot_mix_so_mixtures_keep_the_grid():
    """Why ``fit --model spots|binary`` keeps the embedded grid as its default: the shipped
    optical emulator predicts normalised flux only, and mixing needs the continua."""
    from photosphere.errors import ModelError
    from photosphere.grids.default_model import optical_model_path
    from photosphere.grids.load import load_grid_model
    from photosphere.infer.mixture import make_model

    if optical_model_path() is None:
        pytest.skip("this installation does not carry the optical emulator")
    optical = load_grid_model("optical")
    for mode in ("spots", "binary"):
        with pytest.raises(ModelError, match="continua"):
            make_model(mode, optical)


def test_cli_refuses_several_files_without_epochs(tmp_path, capsys):
    paths = []
    for i in range(2):
        p = tmp_path / f"s{i}.txt"
        w = np.linspace(5150.0, 5160.0, 100)
        np.savetxt(p, np.column_stack([w, np.ones_like(w), np.full_like(w, 0.01)]),
                   header="medium: air\nwavelength flux sigma")
        paths.append(str(p))
    assert cli.main(["fit", *paths, "--model", "spots"]) == 2
    assert "one spectrum at a time" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_fits_a_binary_over_two_epochs(grid, tmp_path, capsys):
    model = BinaryModel(grid, n_epochs=2, share=("feh", "logg"))
    truth = {"teff_a": 6000.0, "vsini_a": 6.0, "teff_b": 5000.0, "vsini_b": 4.0, "feh": 0.0,
             "logg": 4.5, "radius_ratio": 0.8, "delta_rv_0": -40.0, "delta_rv_1": 50.0,
             "rv_0": 10.0, "rv_1": -5.0}
    exposures = simulate(model, truth, [WAVE[:2500], WAVE[:2500]], resolution=50000, snr=120,
                         seed=11)
    paths = []
    for i, spec in enumerate(exposures):
        path = tmp_path / f"night{i}.txt"
        np.savetxt(path, np.column_stack([spec.wavelength, spec.flux, spec.sigma]),
                   header="medium: air\nwavelength flux sigma")
        paths.append(str(path))
    code = cli.main(["fit", *paths, "--model", "binary", "--epochs", "--share", "feh", "logg",
                     "--resolution", "50000", "--fix", "feh=0", "logg=4.5", "--json"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    labels = doc["mixture"]["labels"]
    assert abs(labels["delta_rv_0"]["value"] + 40.0) < 1.0
    assert abs(labels["delta_rv_1"]["value"] - 50.0) < 1.0
    assert abs(labels["teff_b"]["value"] - 5000.0) < 150.0
    assert doc["derived"]["rv_b_1"]["median"] == pytest.approx(45.0, abs=1.0)


@pytest.mark.slow
def test_general_fitter_takes_a_spot_model_directly(grid):
    """A mixture is just another forward model: infer.fit from its default starts."""
    from photosphere.infer import fit

    model = SpotModel(grid)
    obs = simulate(model, SPOTS, WAVE[:2000], resolution=50000, snr=150, seed=12)
    r = fit(model, obs, resolution=50000, fixed={"logg": 4.5, "feh": 0.0})
    assert abs(r.values["filling_factor"] - 0.4) < 0.05
    assert abs(r.values["teff_spot"] - 4500.0) < 150.0
