"""The public API (photosphere.read / fit / sample / predict / load_model) and the README's
Python example, run as written on a synthetic spectrum and on the UVES Sun."""

from __future__ import annotations

import contextlib
import io
import json
import re

import numpy as np
import pytest
import torch

import photosphere
from analytic_model import AnalyticModel, simulate
from conftest import REPO, shared_file
from photosphere.errors import MissingFileError, ModelError
from photosphere.grids.interpolate import GridInterpolator
from photosphere.grids.presets import default_grid_path
from photosphere.infer.optimize import fit as least_squares
from photosphere.infer.protocol import merge_defaults
from photosphere.models.cannon import CannonModel
from photosphere.nn.predict import NNPrediction
from photosphere.ops.noise import with_uncertainty
from photosphere.result import Result

README_PATH = "photosphere-demo/demo-observation.hdf5"


def readme_example() -> str:
    """The ```python block under "## In Python" in README.md."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## In Python"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def run_readme(path, settings: str | None = None) -> dict:
    """Execute the README example on ``path`` (with ``settings`` in place of its resolution);
    its printed JSON."""
    code = readme_example().replace(README_PATH, str(path))
    if settings is not None:
        code = code.replace("resolution=115_000", settings)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    return json.loads(out.getvalue())


def test_the_readme_example_is_three_calls():
    code = [line for line in readme_example().splitlines()
            if line.strip() and not line.startswith("#")]
    assert code[0] == "import photosphere"
    assert len(code) == 4 and "photosphere.read(" in code[1] and "photosphere.fit(" in code[2]


def _write_text(path, spectrum) -> None:
    rows = "\n".join(f"{w:.5f} {f:.6f}" for w, f in zip(spectrum.wavelength, spectrum.flux,
                                                        strict=True))
    path.write_text(f"# wavelength [Angstrom] flux, air wavelengths\n{rows}\n")


@pytest.mark.slow
def test_readme_example_on_a_synthetic_spectrum_without_sigma(tmp_path):
    torch.set_num_threads(1)
    grid = GridInterpolator(default_grid_path())
    truth = {"teff": 5900.0, "logg": 4.3, "feh": -0.2, "rv": 12.0, "vsini": 4.0}
    truth.update({n: float(np.mean(grid.bounds[n])) for n in grid.label_names if n not in truth})
    wave = np.geomspace(5160.0, 5200.0, 3000)
    spectrum, _ = simulate(grid, truth, wave, resolution=115_000, snr=150.0, seed=2)
    path = tmp_path / "synthetic.txt"
    _write_text(path, spectrum)
    doc = run_readme(path)
    labels = doc["labels"]
    assert abs(labels["teff"]["value"] - truth["teff"]) < 4 * labels["teff"]["sigma"] + 30
    assert abs(labels["rv"]["value"] - truth["rv"]) < 0.5
    # σ came from DER_SNR and the result says so
    snr = doc["flags"]["sigma_estimated"]["snr"][0]
    assert doc["flags"]["sigma_estimated"]["method"] == "DER_SNR" and 100 < snr < 200
    # 40 Å inside the embedded grid's window: the embedded grid, and the result says why
    assert doc["provenance"]["model"]["name"] == "embedded"
    assert "covers 0 of the optical model's 7 windows" in doc["provenance"]["model"]["reason"]


@pytest.mark.slow
@pytest.mark.realdata
def test_readme_example_on_the_uves_sun():
    """The whole UVES atlas file, at R = 60 000 and with the 3σ clipping of docs/fitting.md's
    protocol: it covers the optical model's seven windows, so the default is that model (with
    the embedded grid, which keeps its own 300 Å, this test asked for the same limits)."""
    doc = run_readme(shared_file("optical/uves_sun_norm.txt"), "resolution=60_000, clip=3.0")
    if photosphere_has_optical():
        assert doc["provenance"]["model"]["name"] == "optical"
    labels = doc["labels"]
    assert abs(labels["teff"]["value"] - 5772.0) < 200.0
    assert abs(labels["logg"]["value"] - 4.44) < 0.3
    assert abs(labels["feh"]["value"]) < 0.25
    assert doc["flags"]["sigma_estimated"]["method"] == "DER_SNR"


def photosphere_has_optical() -> bool:
    from photosphere.grids.default_model import optical_model_path

    return optical_model_path() is not None


needs_optical = pytest.mark.skipif(not photosphere_has_optical(),
                                   reason="this installation does not carry the optical emulator")


def _flat(lo: float, hi: float) -> photosphere.Spectrum:
    wave = np.linspace(lo, hi, 3000)
    return photosphere.Spectrum(wave, np.ones(wave.size), np.full(wave.size, 0.01), medium="air")


@needs_optical
def test_fit_and_sample_choose_the_model_as_the_command_does():
    from photosphere.api import _given_model, _model_for
    from photosphere.grids.calibrated import CalibratedModel

    model, choice = _model_for(None, None, _flat(4800.0, 6800.0))
    assert isinstance(model, CalibratedModel) and choice.name == "optical"
    model, choice = _model_for(None, None, _flat(5050.0, 5350.0))
    assert isinstance(model, GridInterpolator) and choice.name == "embedded"
    assert _given_model(None) == (None, None)
    model, choice = _given_model("default")  # forced, whatever the spectrum
    assert isinstance(model, GridInterpolator) and choice.reason == "given: default"
    assert _given_model(model)[1].as_dict() == {"name": "GridInterpolator", "reason": "given"}


@pytest.mark.slow
@needs_optical
def test_fit_by_default_with_the_optical_model_recovers_its_own_spectrum():
    """A spectrum the shipped optical model makes, over its seven windows, fitted with no model
    named: the optical model is chosen, the labels come back, and its own σ_sys is added."""
    from photosphere.grids.load import load_grid_model
    from photosphere.infer.protocol import SYSTEMATIC_FLOOR

    torch.set_num_threads(1)
    optical = load_grid_model("optical")
    truth = {"teff": 5800.0, "logg": 4.4, "feh": -0.3, "alpha": 0.1, "vmic": 1.0}
    flux = np.asarray(optical.predict([[truth[n] for n in optical.label_names]]))[0]
    sigma = np.full(flux.size, 1 / 200)
    noise = np.random.default_rng(3).normal(0.0, sigma)
    spectrum = photosphere.Spectrum(np.asarray(optical.wavelength), flux + noise, sigma,
                                    medium="air")
    result = photosphere.fit(spectrum)
    assert result.provenance["model"] == {"name": "optical",
                                          "reason": "shipped emulator; covers 7 of its 7 windows",
                                          "windows_covered": 7, "windows": 7}
    assert result.flags["systematic_floor"] == SYSTEMATIC_FLOOR["optical"]["high_resolution"]
    stat = {**result.sigma, **result.flags["sigma_stat"]}  # σ before the floor
    for name, value in truth.items():
        assert abs(result.values[name] - value) < 5 * stat[name] + 1e-3, name


def test_fit_equals_the_primitives_chained_by_hand():
    """Korg's two tiers: the easy call is the primitives with the protocol for real spectra
    (spline continuum, clipping, misfit jitter), plus σ estimated and noted."""
    model = AnalyticModel(5000, 5030, n_lines=12)
    truth = {"teff": 5600.0, "logg": 4.2, "feh": -0.1, "rv": 3.0, "vsini": 5.0}
    observed, _ = simulate(model, truth, model.wavelength[300:-300], resolution=50_000, seed=1)
    bare = observed.replace(sigma=None)
    easy = photosphere.fit(bare, model, resolution=50_000, n_grid=2, n_starts=1)
    by_hand = least_squares(model, with_uncertainty(bare), n_grid=2, n_starts=1,
                            **merge_defaults({"resolution": 50_000}))
    assert isinstance(easy, Result)
    assert easy.values == by_hand.values and easy.sigma == by_hand.sigma
    assert "sigma_estimated" not in by_hand.flags
    assert easy.flags["sigma_estimated"]["method"] == "DER_SNR"
    # a spectrum with σ is fitted as given, with no note
    given = photosphere.fit(observed, model, resolution=50_000, n_grid=2, n_starts=1)
    assert "sigma_estimated" not in given.flags


def test_without_sigma_the_fitter_names_the_fix():
    model = AnalyticModel(5000, 5030, n_lines=12)
    observed, _ = simulate(model, {"teff": 5600.0, "logg": 4.2, "feh": -0.1, "rv": 0.0},
                           model.wavelength[300:-300])
    with pytest.raises(photosphere.errors.InvalidSpectrumError, match="with_uncertainty"):
        least_squares(model, observed.replace(sigma=None))


def test_load_model_by_name_and_by_file(tmp_path):
    assert isinstance(photosphere.load_model(), GridInterpolator)
    assert isinstance(photosphere.load_model("grid"), GridInterpolator)
    rng = np.random.default_rng(0)
    labels = rng.uniform([4500, 3.5], [6500, 4.8], size=(30, 2))
    flux = 1 - 0.1 * np.outer(labels[:, 0] / 6000, np.ones(12)) + rng.normal(0, 1e-3, (30, 12))
    cannon = CannonModel(("teff", "logg"), order=1).fit(labels, flux, np.full_like(flux, 1e6),
                                                        np.linspace(5000, 5001, 12))
    loaded = photosphere.load_model(cannon.save(tmp_path / "c.h5"))
    assert isinstance(loaded, CannonModel) and loaded.label_names == ("teff", "logg")
    (tmp_path / "other.h5").write_bytes(b"not hdf5")
    with pytest.raises(ModelError, match="not an HDF5 model file"):
        photosphere.load_model(tmp_path / "other.h5")
    with pytest.raises((ModelError, MissingFileError)):
        photosphere.load_model(tmp_path / "absent-network.pt")
    with pytest.raises(MissingFileError, match=r"absent\.h5 does not exist"):
        photosphere.load_model(tmp_path / "absent.h5")


def test_fit_refuses_a_network():
    class Network:
        pass

    with pytest.raises(ModelError, match=r"photosphere\.predict"):
        photosphere.fit(photosphere.Spectrum(np.linspace(5000, 5001, 10), np.ones(10),
                                             np.full(10, 0.01), medium="air"), Network())


def test_network_prediction_converts_to_the_result():
    cov = np.diag([50.0, 0.1, 0.05]) ** 2
    pred = NNPrediction({"teff": (5800.0, 50.0), "logg": (4.4, 0.1), "feh": (0.0, 0.05)}, cov,
                        ("teff", "logg", "feh"),
                        {"consistency": {"checked": True, "out_of_distribution": False}})
    result = pred.to_result()
    assert result.method == "network" and result.free == ("teff", "logg", "feh")
    assert result.labels["teff"] == (5800.0, 50.0)
    np.testing.assert_array_equal(result.covariance, cov)
    assert result.flags["out_of_distribution"] is False
    assert json.loads(result.to_json())["labels"]["logg"] == {"value": 4.4, "sigma": 0.1}


@pytest.mark.realdata
def test_predict_gives_a_result_for_a_file():
    result = photosphere.predict(shared_file("optical/uves_sun_norm.txt"), check_grid=False)
    assert isinstance(result, Result) and result.method == "network"
    assert abs(result.values["teff"] - 5772) < 300


def test_the_public_names():
    assert set(photosphere.__all__) >= {"read", "fit", "sample", "predict", "load_model",
                                        "Spectrum", "EchelleSpectrum", "Result", "errors"}
    assert photosphere.Result is Result
    with pytest.raises(AttributeError):
        photosphere.no_such_name  # noqa: B018
