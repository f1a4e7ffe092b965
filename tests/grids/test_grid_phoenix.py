"""PHOENIX-ACES ingest on tiny fixture files written in the real PHOENIX layout and units."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _analytic import LINES, planck_surface_flux
from astropy.io import fits

from photosphere.errors import FileFormatError, GridError, MissingFileError
from photosphere.grids import _sampling
from photosphere.grids.interpolate import GridInterpolator
from photosphere.grids.phoenix import (
    WAVE_FILE,
    ingest_phoenix,
    labels_from_name,
    phoenix_file_name,
    upper_envelope,
)
from photosphere.grids.store import GridStore

TEFFS, LOGGS = (5000.0, 5500.0, 6000.0), (4.0, 4.5)


def _phoenix_flux(wave_vac: np.ndarray, teff: float, logg: float) -> np.ndarray:
    """erg/s/cm²/cm, lines at vacuum wavelengths LINES (so they land at air positions after)."""
    depth = 0.5 * (6500 - teff) / 1500 * (1 + 0.1 * logg)
    lines = np.prod(1 - depth * np.exp(-0.5 * ((wave_vac[:, None] - LINES) / 0.08) ** 2), axis=1)
    return planck_surface_flux(wave_vac, teff) * lines * 1e8


@pytest.fixture(scope="module")
def phoenix_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("phoenix") / "PHOENIX-ACES-AGSS-COND-2011"
    root.mkdir()
    wave = np.arange(5000.0, 5400.0, 0.02)
    fits.PrimaryHDU(wave).writeto(root.parent / WAVE_FILE)
    for teff in TEFFS:
        for logg in LOGGS:
            if teff == 6000.0 and logg == 4.0:
                continue  # a gap in the grid, as real downloads have
            path = root / phoenix_file_name(teff, logg, 0.0)
            path.parent.mkdir(exist_ok=True)
            hdu = fits.PrimaryHDU(_phoenix_flux(wave, teff, logg).astype(np.float32))
            hdu.header.update({"PHXTEFF": teff, "PHXLOGG": logg, "PHXM_H": 0.0,
                               "PHXALPHA": 0.0, "BUNIT": "erg/s/cm^2/cm"})
            hdu.writeto(path)
    return root


def test_names_follow_the_phoenix_scheme():
    name = phoenix_file_name(5700, 4.5, 0.0)
    assert name == "Z-0.0/lte05700-4.50-0.0.PHOENIX-ACES-AGSS-COND-2011-HiRes.fits"
    assert labels_from_name(name) == {"teff": 5700.0, "logg": 4.5, "feh": 0.0, "alpha": 0.0}
    alpha = phoenix_file_name(3500, 1.0, -1.5, 0.4)
    assert alpha.startswith("Z-1.5.Alpha=+0.40/lte03500-1.00-1.5.Alpha=+0.40.")
    assert labels_from_name(alpha) == {"teff": 3500.0, "logg": 1.0, "feh": -1.5, "alpha": 0.4}


def test_ingest_converts_units_frame_and_layout(tmp_path, phoenix_root):
    out = ingest_phoenix(phoenix_root, tmp_path / "phx.h5", wavelength_min=5100.0,
                         wavelength_max=5300.0, progress=False)
    with GridStore.open(out) as store:
        assert store.label_names == ("teff", "logg")
        assert store.fixed_labels == {"feh": 0.0, "alpha": 0.0}
        assert store.medium == "air" and store.info()["n_missing"] == 1
        assert not store.present[2, 0]
        wave_vac = np.arange(5000.0, 5400.0, 0.02)
        wave_air = _sampling.vacuum_to_air(wave_vac)
        expected = _sampling.rebin(wave_air, _phoenix_flux(wave_vac, 5500.0, 4.5).astype(
            np.float32) * 1e-8, store.wavelength)
        np.testing.assert_allclose(store.absolute_flux((1, 1)), expected, rtol=2e-5)
        # the line at vacuum 5172.7 Å appears at its air wavelength
        flux = store.flux((0, 0))
        win = np.abs(store.wavelength - 5172.7) < 3
        deepest = store.wavelength[win][np.argmin(flux[win])]
        assert abs(deepest - _sampling.vacuum_to_air(np.array([5172.7]))[0]) < 0.05
        # the pseudo-continuum hugs the line-free flux
        line_free = np.all(np.abs(store.wavelength[:, None] - LINES) > 1.0, axis=1)
        assert np.median(np.abs(flux[line_free] - 1)) < 2e-3
    model = GridInterpolator(out)
    assert model.predict(torch.tensor([5250.0, 4.25])).shape == (store.n_pix,)


def test_ingest_errors_name_the_problem(tmp_path, phoenix_root):
    with pytest.raises(GridError, match="do not cover"):
        ingest_phoenix(phoenix_root, tmp_path / "x.h5", wavelength_min=4000.0,
                       wavelength_max=5300.0, progress=False)
    with pytest.raises(MissingFileError, match="no PHOENIX-ACES HiRes files"):
        ingest_phoenix(tmp_path, tmp_path / "y.h5", wavelength_min=5100.0,
                       wavelength_max=5300.0, progress=False)
    bad = tmp_path / "lte05000-4.00-0.0.PHOENIX-ACES-AGSS-COND-2011-HiRes.fits"
    bad.write_bytes(b"truncated")
    with pytest.raises(FileFormatError, match="not a readable PHOENIX FITS file"):
        ingest_phoenix([bad], tmp_path / "z.h5", wave_file=phoenix_root.parent / WAVE_FILE,
                       wavelength_min=5100.0, wavelength_max=5300.0, progress=False)
    assert not (tmp_path / "z.h5").exists()


def test_upper_envelope_recovers_a_smooth_continuum(rng):
    wave = np.linspace(5100, 5300, 20000)
    cont = 1e6 * (1 + 0.3 * (wave - 5100) / 200)
    lines = 1 - 0.6 * np.exp(-0.5 * ((wave[:, None] - rng.uniform(5100, 5300, 60)) / 0.1) ** 2)
    env = upper_envelope(wave, cont * lines.prod(axis=1))
    assert np.max(np.abs(env / cont - 1)) < 5e-3
