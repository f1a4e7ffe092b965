"""The benchmark stars (../shared/data/stars/labels.csv): every listed spectrum reads with
``photosphere.io.read`` and ``photosphere info``, and each format's reader gets the real file's
range, frame, shape and units right. Skips when the shared data is absent."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest

from conftest import shared_data_dir, shared_file
from photosphere.cli import main
from photosphere.io import identify, read
from photosphere.spectrum import MEDIA, EchelleSpectrum, Spectrum

pytestmark = pytest.mark.realdata


def _label_rows() -> list:
    path = shared_data_dir() / "stars" / "labels.csv"
    if not path.is_file():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{path} is absent"))]
    with open(path, newline="") as fh:
        return [pytest.param(row, id=row["file"]) for row in csv.DictReader(fh)]


@pytest.mark.parametrize("row", _label_rows())
def test_every_labelled_star_reads(row, capsys):
    path = shared_file(f"stars/{row['file']}")
    spec = read(path)
    assert isinstance(spec, Spectrum | EchelleSpectrum)
    assert spec.medium in MEDIA
    good = ~spec.mask
    assert spec.masked_fraction < 0.5 and np.all(np.isfinite(spec.flux[good]))
    lo, hi = spec.wavelength_range
    assert 3000.0 < lo < hi < 20000.0
    if "air" in [t.strip() for t in re.split(r"[;()]", row["notes"])]:
        assert spec.medium == "air"  # as labels.csv states
    assert main(["info", str(path), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["kind"] in ("1d", "echelle") and d["wavelength_unit"] == "Angstrom"
    assert d["wavelength_min"] == pytest.approx(lo) and d["wavelength_max"] == pytest.approx(hi)
    assert d["medium"] == spec.medium and isinstance(d["medium_assumed"], bool)


def test_hires_order_image_with_wavelength_hdu():
    path = shared_file("stars/hires/hires_gl699_rj130.2075.fits")
    assert identify(path) == "hires_orders"
    spec = read(path)
    assert isinstance(spec, EchelleSpectrum) and spec.shape == (16, 4021)
    assert spec.wavelength_range == pytest.approx((4976.563, 6421.255), abs=1e-3)
    assert np.all(np.diff(spec.wavelength[:, 0]) > 0)  # blue to red
    assert spec.medium == "air" and spec.meta.extra["medium_assumed"] is True
    assert spec.flux_unit == "counts" and spec.meta.extra["frame"].startswith("observed")
    assert spec.meta.instrument == "HIRES" and spec.meta.object_name == "gl699"
    # decker E2 (0.40" slit) is in the documented table
    assert spec.meta.extra["decker"] == "E2" and spec.meta.extra["resolution"] == 80_000.0
    from astropy.io import fits

    frac = fits.getdata(path, 1).astype(float)
    assert np.allclose(spec.sigma / spec.flux, frac, rtol=1e-5)
    # the HDU-1 σ is fractional: σ √counts ≈ 1 (Poisson, gain ≈ 1)
    assert np.median(frac * np.sqrt(fits.getdata(path, 0))) == pytest.approx(1.0, abs=0.15)


def test_hires_order_image_with_undocumented_decker_has_no_resolution():
    spec = read(shared_file("stars/hires/hires_hd190406_rj59.1923.fits"))
    assert spec.meta.extra["decker"] == "B1" and "resolution" not in spec.meta.extra
    assert "--resolution" in spec.meta.extra["resolution_source"]


def test_hires_specmatch_table():
    path = shared_file("stars/hires/hires_gj880_rj59.1926_adj.fits")
    assert identify(path) == "hires_table"
    spec = read(path)
    assert isinstance(spec, Spectrum) and len(spec) == 75064
    assert spec.wavelength_range == pytest.approx((4977.352, 6421.496), abs=1e-3)
    assert spec.flux_unit == "normalized" and spec.meta.extra["frame"].startswith("rest")
    assert int(spec.mask.sum()) == 76  # the NaN rows
    assert spec.medium == "air" and spec.meta.extra["medium_assumed"]


def test_three_text_files_in_a_folder():
    path = shared_file("stars/hires/hires_hd22072")
    assert identify(path) == "text_folder"
    spec = read(path)
    assert isinstance(spec, EchelleSpectrum) and spec.shape == (16, 4021)
    assert spec.wavelength_range == pytest.approx((4978.767, 6417.794), abs=1e-3)
    assert np.all(np.diff(spec.wavelength[:, 0]) > 0)
    ivar = np.loadtxt(path / "ivar_HD22072_flat.txt")
    wave = np.loadtxt(path / "wavelengths_flat.txt")
    i = int(np.argmin(np.abs(spec.wavelength - wave[0]).ravel()))
    assert spec.sigma.ravel()[i] == pytest.approx(1 / np.sqrt(ivar[0]))
    assert spec.flux_unit == "normalized" and spec.meta.instrument == "HIRES"


def test_csv_in_nm_is_converted_to_angstrom():
    path = shared_file("stars/hires/griffith2022_2MASS_J03443498+0553014.csv")
    assert identify(path) == "csv_table"
    spec = read(path)
    assert spec.wavelength_range == pytest.approx((4221.0489, 6316.7334), abs=1e-3)
    assert spec.meta.extra["wavelength_unit_in_file"] == "nm"
    assert "converted to Å" in spec.meta.extra["wavelength_note"]
    assert spec.has_uncertainty and spec.median_snr() > 50
    assert spec.medium == "air" and spec.meta.extra["medium_assumed"]
    assert read(path, medium="vacuum").medium == "vacuum"


def test_mike_linear_1d():
    """The MIKE files are merged, linear-WCS 1D spectra (no multispec WAT keywords)."""
    path = shared_file("stars/hires/mike_g64-12.fits")
    assert identify(path) == "fits1d"
    spec = read(path)
    assert len(spec) == 187132
    assert spec.wavelength_range == pytest.approx((3400.0206, 9399.9911), abs=1e-3)
    assert spec.meta.instrument == "MIKE" and "file name" in spec.meta.extra["instrument_source"]
    assert "resolution" not in spec.meta.extra  # the slit is not recorded
    assert spec.medium == "air" and spec.meta.extra["medium_assumed"]


def test_gbs_library_ispec_file_records_air():
    path = shared_file("stars/hires/harps_procyon.fits")
    assert identify(path) == "ispec_fits"
    spec = read(path)
    assert len(spec) == 200_000 and spec.wavelength_range[0] == pytest.approx(4800.0)
    assert spec.medium == "air" and spec.meta.extra["medium_assumed"] is False
    assert spec.meta.extra["medium_source"] == "header CTYPE1"
    assert "resolution" not in spec.meta.extra


@pytest.mark.parametrize("relative, n, lo, instrument, resolution", [
    ("stars/hires/harps_gl643.fits", 312897, 3783.14, "HARPS", 115_000.0),
    ("stars/hires/sophie_gl908.fits", 307197, 3873.6989, "SOPHIE", None),
])
def test_odusseas_1d_spectra(relative, n, lo, instrument, resolution):
    spec = read(shared_file(relative))
    assert len(spec) == n and spec.wavelength_range[0] == pytest.approx(lo, abs=1e-3)
    assert spec.meta.instrument == instrument
    assert spec.meta.extra.get("resolution") == resolution
    assert spec.medium == "air" and spec.meta.extra["medium_assumed"]


def test_miles_star():
    path = shared_file("stars/miles/MILES_res2.50_star_m0012V.fits")
    assert identify(path) == "miles"
    spec = read(path)
    assert len(spec) == 4300
    assert spec.wavelength_range == pytest.approx((3540.5, 7409.6), abs=1e-3)
    assert spec.meta.extra["lsf_fwhm_angstrom"] == 2.5
    assert spec.meta.extra["resolution"] == pytest.approx(2200.0)
    assert spec.medium == "air" and spec.meta.extra["medium_assumed"] is False
    assert spec.flux_unit.startswith("relative flux") and spec.meta.extra["frame"].startswith(
        "rest")


def test_info_text_states_units_and_frames(capsys):
    path = shared_file("stars/hires/hires_gl699_rj130.2075.fits")
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "medium:      air (ASSUMED" in out and "frame:       observed" in out
    assert "R = 80,000" in out and "flux:        counts (not normalised)" in out
    assert main(["info", str(path), "--medium", "vacuum", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["medium"] == "vacuum" and d["medium_assumed"] is False


@pytest.mark.parametrize("relative", [
    "stars/hires/hires_gj880_rj59.1926_adj.fits", "stars/hires/hires_hd22072",
    "stars/hires/griffith2022_2MASS_J03443498+0553014.csv", "stars/hires/mike_g64-12.fits",
    "stars/hires/harps_gl643.fits", "stars/hires/sophie_gl908.fits",
])
def test_assumed_air_is_right_na_d_at_air_positions(relative):
    """These rest-frame spectra record no air/vacuum: the assumed air frame puts the Na D cores
    at their air wavelengths (5889.95, 5895.92 Å); vacuum would be 1.6 Å redder."""
    spec = read(shared_file(relative))
    assert spec.meta.extra["medium_assumed"] and spec.medium == "air"
    w, f, m = spec.wavelength.ravel(), spec.flux.ravel(), spec.mask.ravel()
    for air in (5889.951, 5895.924):
        sel = (w > air - 2.0) & (w < air + 2.0) & ~m  # holds the vacuum position too
        assert w[sel][np.argmin(f[sel])] == pytest.approx(air, abs=0.1)


@pytest.mark.parametrize("star", ["m0046V", "m0067V", "m0123V", "m0501V"])
def test_miles_wavelengths_are_air(star):
    """Na D and Mg b line centres (parabola through the deepest pixels) within 0.3 Å of their
    air wavelengths; vacuum would put them 1.4-1.6 Å redder."""
    spec = read(shared_file(f"stars/miles/MILES_res2.50_star_{star}.fits"))
    w, f = spec.wavelength, spec.flux
    for air in (5889.951, 5895.924, 5183.604, 5172.684):
        inside = (w > air - 2.5) & (w < air + 2.5)
        i = int(np.argmin(np.where(inside, f, np.inf)))
        y0, y1, y2 = f[i - 1: i + 2]
        centre = w[i] + 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2) * (w[1] - w[0])
        assert centre == pytest.approx(air, abs=0.3)
