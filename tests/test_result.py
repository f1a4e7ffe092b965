"""Result serialisation (JSON, ECSV, FITS) and plots."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from photosphere.errors import FitError
from photosphere.result import Result, Segment


@pytest.fixture
def result(rng):
    wave = np.linspace(5000, 5010, 50)
    seg = Segment(wavelength=wave, flux=1 + rng.normal(0, 0.01, 50), sigma=np.full(50, 0.01),
                  mask=np.zeros(50, bool), model=np.ones(50), continuum=np.ones(50),
                  name="order 70")
    cov = np.array([[35.0 ** 2, 0.5], [0.5, 0.05 ** 2]])
    return Result(values={"teff": 5790.0, "logg": 4.4, "feh": 0.0},
                  sigma={"teff": 35.0, "logg": 0.05, "feh": float("nan")},
                  free=("teff", "logg"), covariance=cov, chi2=48.0, n_pixels=50,
                  n_parameters=5, segments=(seg,), flags={"converged": True, "at_bound": []},
                  provenance={"source": "star.fits"})


def test_json_shape(result):
    doc = json.loads(result.to_json())
    assert doc["labels"]["teff"] == {"value": 5790.0, "sigma": 35.0}
    assert doc["labels"]["feh"] == {"value": 0.0, "sigma": None}
    assert doc["chi2_reduced"] == pytest.approx(48.0 / 45)
    assert doc["fixed"] == ["feh"] and doc["free"] == ["teff", "logg"]
    assert result.labels["logg"] == (4.4, 0.05)


def test_correlation(result):
    corr = result.correlation()
    assert corr[0, 1] == pytest.approx(0.5 / (35.0 * 0.05))


def test_ecsv_round_trip(result, tmp_path):
    path = result.to_ecsv(tmp_path / "r.ecsv")
    table = Table.read(path, format="ascii.ecsv")
    assert table["teff"][0] == 5790.0 and table["teff_err"][0] == 35.0
    assert table["source"][0] == "star.fits"
    assert table.meta["free"] == ["teff", "logg"]


def test_fits_holds_labels_covariance_segments(result, tmp_path):
    path = result.to_fits(tmp_path / "r.fits")
    with fits.open(path) as hdul:
        assert hdul["LABELS"].data["logg"][0] == 4.4
        np.testing.assert_allclose(hdul["COVAR"].data, result.covariance)
        assert hdul["COVAR"].header["FREE"] == "teff,logg"
        assert hdul["SEGMENTS"].data["flux"].shape == (1, 50)
        assert hdul[0].header["CONVERG"]


def test_json_written_atomically(result, tmp_path):
    result.to_json(tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["n_pixels"] == 50
    assert not list(tmp_path.glob(".r.json*"))


def test_plots(result, tmp_path):
    import matplotlib.pyplot as plt

    fig = result.plot(tmp_path / "fit.png")
    assert (tmp_path / "fit.png").stat().st_size > 0
    assert len(fig.axes) == 2
    plt.close(fig)
    fig = result.corner(tmp_path / "corner.png", truths={"teff": 5772.0, "logg": 4.44})
    assert "Gaussian approximation" in fig.get_suptitle()
    assert (tmp_path / "corner.png").stat().st_size > 0
    plt.close(fig)


def test_plot_without_segments_is_an_error(result):
    empty = Result(**{**result.__dict__, "segments": ()})
    with pytest.raises(FitError, match="no data"):
        empty.plot()


def test_corner_leaves_out_a_parameter_without_information(result, tmp_path):
    import matplotlib.pyplot as plt

    cov = np.array([[35.0 ** 2, 0.0, 0.5], [0.0, np.nan, 0.0], [0.5, 0.0, 0.05 ** 2]])
    res = Result(**{**result.__dict__, "free": ("teff", "vmac", "logg"), "covariance": cov,
                    "values": {**result.values, "vmac": 0.0},
                    "sigma": {**result.sigma, "vmac": float("nan")}})
    fig = res.corner(tmp_path / "corner.png")
    assert "no information on vmac" in fig.get_suptitle()
    assert len(fig.axes) == 4          # a 2 × 2 corner: teff and logg only
    plt.close(fig)
    assert json.loads(json.dumps(res.to_dict()))["labels"]["vmac"]["sigma"] is None
