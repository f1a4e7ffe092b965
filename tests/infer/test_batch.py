"""Batch fitting with Dask: one table, written after each spectrum, completed by a rerun."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from analytic_model import AnalyticModel, simulate
from photosphere import Spectrum
from photosphere.errors import MissingFileError
from photosphere.infer.batch import expand_paths, fit_many, read_table

READS: list[str] = []
TRUTH = {"teff": 5800.0, "logg": 4.3, "feh": -0.2, "vsini": 5.0, "rv": 3.0}
FIT = {"resolution": 40000, "rv_bounds": (-20.0, 30.0), "n_grid": 1, "n_starts": 1,
       "initial": TRUTH}


def read_npz(path: str) -> Spectrum:
    READS.append(path)
    with np.load(path) as f:
        return Spectrum(f["wavelength"], f["flux"], f["sigma"])


def small_model():
    return AnalyticModel(5000.0, 5040.0, velocity_step=1.0, n_lines=20)


def _write(tmp_path, name, seed):
    wave = np.linspace(5005, 5035, 600)
    spec = simulate(small_model(), TRUTH, wave, resolution=40000, snr=60, seed=seed)[0]
    path = tmp_path / name
    np.savez(path, wavelength=spec.wavelength, flux=spec.flux, sigma=spec.sigma)
    return path


def test_expand_paths(tmp_path):
    for name in ("a.npz", "b.npz"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in expand_paths([str(tmp_path / "*.npz"), tmp_path / "a.npz"])] == \
        ["a.npz", "b.npz"]
    with pytest.raises(MissingFileError, match="no file matches"):
        expand_paths([str(tmp_path / "*.fits")])
    with pytest.raises(MissingFileError, match="does not exist"):
        expand_paths([tmp_path / "c.npz"])


@pytest.mark.slow
def test_batch_writes_one_table_and_rerun_skips_finished(tmp_path):
    for i in range(2):
        _write(tmp_path, f"star{i}.npz", seed=i)
    bad = tmp_path / "outside.npz"  # a spectrum the model does not cover
    lines = 1.0 - 0.5 * (np.sin(np.linspace(0, 90, 300)) > 0.8)  # a star, but not in range
    np.savez(bad, wavelength=np.linspace(6000, 6030, 300), flux=lines, sigma=np.full(300, 0.01))
    out = tmp_path / "results.ecsv"
    factory = functools.partial(small_model)
    READS.clear()
    table = fit_many([str(tmp_path / "*.npz")], factory, out, reader=read_npz, fit_kwargs=FIT,
                     processes=False, progress=False)
    assert len(table) == 3 and len(READS) == 3
    rows = {r["source"]: r for r in table}
    assert rows[str(bad)]["status"].startswith("error: no observed pixel")
    for i in range(2):
        row = rows[str(tmp_path / f"star{i}.npz")]
        assert row["status"] == "ok"
        assert abs(row["teff"] - 5800.0) < 5 * row["teff_err"]
    # a new file arrives; the rerun fits it and retries the failure, not the finished ones
    _write(tmp_path, "star2.npz", seed=2)
    READS.clear()
    table = fit_many([str(tmp_path / "*.npz")], factory, out, reader=read_npz, fit_kwargs=FIT,
                     processes=False, progress=False)
    assert sorted(READS) == sorted([str(tmp_path / "star2.npz"), str(bad)])
    assert len(table) == 4
    assert len(read_table(out)) == 4
    READS.clear()
    fit_many([str(tmp_path / "star*.npz")], factory, out, reader=read_npz, fit_kwargs=FIT,
             processes=False, progress=False)
    assert READS == []


def test_nonpositive_flux_is_masked_before_sigma_is_estimated(tmp_path):
    """A CCD gap stored as zeros (as in HARPS s1d files) is masked and does not enter DER_SNR."""
    from photosphere import Spectrum
    from photosphere.infer.batch import prepare_spectrum
    from photosphere.io.prepare import mask_nonpositive

    rng = np.random.default_rng(5)
    wave = np.linspace(5000.0, 5100.0, 4000)
    flux = 1000.0 * (1 + rng.normal(0, 0.01, wave.size))
    flux[1500:1700] = 0.0
    flux[10] = -3.0
    spec = Spectrum(wave, flux, medium="air")
    masked = mask_nonpositive(spec)
    assert masked.mask.sum() == 201 and masked.meta.extra["masked_nonpositive"] == 201
    assert mask_nonpositive(masked) is masked          # nothing more to mask
    path = tmp_path / "gap.txt"
    np.savetxt(path, np.column_stack([wave, flux]))
    prepared = prepare_spectrum(str(path), medium="air")
    assert prepared.mask[1500:1700].all() and prepared.mask.sum() == 201
    snr = prepared.meta.extra["sigma_estimated_snr"][0]
    assert 70 < snr < 130                               # the 1 % noise, not the gap's edges
