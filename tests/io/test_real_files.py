"""Every real file in ../shared/data (see its SOURCES.md) is identified and read correctly:
product, wavelength range and frame, shape, and key header values. Skips when absent."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import shared_file
from photosphere.cli import main
from photosphere.errors import FileFormatError
from photosphere.io import describe, identify, read
from photosphere.io.apogee import apstar_wavelength

pytestmark = pytest.mark.realdata

# file: (product, wavelength_min, wavelength_max, medium, shape); None = no wavelength axis
EXPECTED = {
    "optical/uves_sun_norm.txt": ("text", 4835.0, 6723.5, "air", [181219]),
    "harps/HARPS.2003-12-13T06-19-48.371_e2ds_A.fits":
        ("harps_e2ds", 3779.57, 6912.90, "air", [72, 4096]),
    "harps/HARPS.2003-12-12T21-47-59.366_wave_A.fits":
        ("harps_wave", 3779.57, 6912.90, "air", [72, 4096]),
    "harps/HARPS.2003-12-12T21-42-45.093_blaze_A.fits": ("harps_blaze", None, None, None,
                                                         [72, 4096]),
    "harps/HARPS.2010-09-18T23-42-36.178_s1d_A.fits":
        ("harps_s1d", 3781.19, 3781.19 + 0.01 * 313113, "air", [313114]),
    "tres/WASP14-2009-06-14.hdf5": ("tres_hdf5", 3849.90, 9096.13, "air", [51, 2298]),
    "hpf/WASP_69_hpf_stack.fits": ("fits_table", 8656.17, 8768.05, "vacuum", [2048]),
    "apogee/atlas_sun_hband.txt": ("text", 15000.02, 16999.99, "air", [82736]),
    "apogee/atlas_arcturus_hband.txt": ("text", 15000.0, 16999.98, "air", [44445]),
    "apogee/apg_rvsynthgrid.fits": ("apogee_rvsynthgrid", 15090.99, 16995.09, "air", [96, 10796]),
    "apogee/apVisit-r13-5095-55844-128.fits":
        ("apogee_apvisit", 15142.69, 16954.79, "vacuum", [3, 4096]),
    "apogee/apVisit-r13-9518-57729-104.fits":
        ("apogee_apvisit", 15142.26, 16954.53, "vacuum", [3, 4096]),
    "apogee/payne/spectrum_ap_id_2M13012770+5754582_.npz":
        ("payne_spectrum", 15168.13, 16936.75, "vacuum", [7214]),
    "apogee/payne/visit_spectra_ap_id_2M06133561+2433362_.npz":
        ("payne_visits", 15168.13, 16936.75, "vacuum", [3, 7214]),
    "apogee/payne/NN_normalized_spectra.npz":
        ("payne_emulator", 15168.13, 16936.75, "vacuum", [7214, 5, 5]),
    "apogee/payne/apogee_wavelength.npz":
        ("payne_wavelength", 15168.13, 16936.75, "vacuum", [7214]),
    "apogee/payne/apogee_visit_wavelength.npz":
        ("apvisit_wavelength", 15143.60, 16954.26, "vacuum", [12288]),
    "apogee/payne/cannon_cont_pixels_apogee.npz":
        ("payne_pixel_mask", 15168.13, 16936.75, "vacuum", [7214]),
    "apogee/payne/apogee_mask.npz": ("payne_pixel_mask", 15168.13, 16936.75, "vacuum", [7214]),
    "telluric/tapas_wasp14.ipac": ("tapas", 5000.0, 5399.975, "vacuum", [16000]),
    "telluric/telfit_hpf_temp286_hum050.csv":
        ("telluric_csv", 8079.04, 12785.83, "vacuum", [57344]),
    "telluric/apogee_lblrtm_H2O.fits": ("lblrtm_grid", 15100.0, 17049.9, "vacuum", [4, 7, 19500]),
    "telluric/apogee_lblrtm_CO2.fits": ("lblrtm_grid", 15100.0, 17049.9, "vacuum", [4, 7, 19500]),
    "telluric/apogee_lblrtm_CH4.fits": ("lblrtm_grid", 15100.0, 17049.9, "vacuum", [4, 7, 19500]),
}


def test_expected_table_covers_every_data_file(shared_data):
    """Every file outside stars/ (whose spectra tests/io/test_stars.py takes from labels.csv)."""
    files = {str(p.relative_to(shared_data)) for p in shared_data.rglob("*")
             if p.is_file() and p.name != "SOURCES.md" and
             p.relative_to(shared_data).parts[0] != "stars"}
    assert files == set(EXPECTED)


@pytest.mark.parametrize("relative", sorted(EXPECTED))
def test_cli_info_json_matches_sources(relative, capsys):
    """`photosphere info FILE --json` (= io.describe) on every file: product, shape, frame and
    wavelength range as SOURCES.md states them."""
    path = shared_file(relative)
    product, lo, hi, medium, shape = EXPECTED[relative]
    assert identify(path) == product
    assert main(["info", str(path), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["product"] == product
    assert d["shape"] == shape
    assert d["medium"] == medium
    if lo is None:
        assert d["wavelength_min"] is None and d["wavelength_max"] is None
    else:
        assert d["wavelength_min"] == pytest.approx(lo, abs=0.01)
        assert d["wavelength_max"] == pytest.approx(hi, abs=0.01)


def test_describe_equals_cli_json(capsys):
    path = shared_file("apogee/apVisit-r13-9518-57729-104.fits")
    assert main(["info", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(describe(path)))


@pytest.mark.parametrize("relative", sorted(EXPECTED))
def test_read_spectra_and_refuse_auxiliary(relative):
    path = shared_file(relative)
    product = EXPECTED[relative][0]
    from photosphere.io.registry import PRODUCTS

    if PRODUCTS[product].is_spectrum:
        spec = read(path)
        assert np.all(np.isfinite(spec.flux)) and spec.masked_fraction < 0.5
    else:
        with pytest.raises(FileFormatError, match=PRODUCTS[product].reader.split("(")[0]):
            read(path)


def test_harps_e2ds_headers():
    spec = read(shared_file("harps/HARPS.2003-12-13T06-19-48.371_e2ds_A.fits"))
    assert spec.meta.object_name == "Gl273" and spec.meta.instrument == "HARPS"
    assert spec.meta.barycentric_correction == pytest.approx(15.2576897)
    assert spec.meta.extra["snr_per_order"][70] == pytest.approx(44.0)
    assert spec.order_numbers[0] == 161 and spec.order_numbers[-1] == 89
    assert 115 not in spec.order_numbers  # the order lost between the two CCDs
    assert spec.meta.extra["wavelength_source"].endswith("_wave_A.fits")
    # the header polynomial reproduces the wave file to < 1 mÅ
    from astropy.io import fits

    from photosphere.io.harps import _header_wavelength

    header = fits.getheader(spec.meta.source)
    assert np.abs(_header_wavelength(header, 72, 4096) - spec.wavelength).max() < 1e-3


def test_harps_deblazed_orders_are_flat_near_centre():
    spec = read(shared_file("harps/HARPS.2003-12-13T06-19-48.371_e2ds_A.fits"), deblaze=True)
    o = spec.flux[60]
    assert abs(np.median(o[1800:2300]) / np.median(o[300:800]) - 1) < 0.5


def test_s1d_header_values():
    spec = read(shared_file("harps/HARPS.2010-09-18T23-42-36.178_s1d_A.fits"))
    assert spec.meta.object_name == "Gl581"
    assert spec.meta.extra["berv_kms"] == pytest.approx(-23.5438772)


def test_apstar_grid_matches_the_payne_aspcap_pixels():
    """apogee_wavelength.npz = apStar pixels 322:3242, 3648:6048, 6412:8306 (SOURCES.md)."""
    payne = np.load(shared_file("apogee/payne/apogee_wavelength.npz"))["wavelength"]
    w = apstar_wavelength()
    expected = np.concatenate([w[322:3242], w[3648:6048], w[6412:8306]])
    assert np.allclose(payne, expected, rtol=1e-9)


def test_uves_sun_is_air_na_d2_position():
    spec = read(shared_file("optical/uves_sun_norm.txt"))
    sel = (spec.wavelength > 5888.5) & (spec.wavelength < 5892.5)
    core = spec.wavelength[sel][np.argmin(spec.flux[sel])]
    assert core == pytest.approx(5889.95, abs=0.1)  # air; vacuum would be 5891.58


def test_hpf_is_vacuum_ca_ii_position():
    spec = read(shared_file("hpf/WASP_69_hpf_stack.fits"))
    sel = (spec.wavelength > 8655) & (spec.wavelength < 8675) & ~spec.mask
    core = spec.wavelength[sel][np.argmin(spec.flux[sel])]
    # Ca II 8664.52 Å vacuum (8662.14 air) at the star's RV (about -10 km/s)
    assert core == pytest.approx(8664.52 * (1 - 10 / 299792.458), abs=0.3)
    assert spec.median_snr() == pytest.approx(470, rel=0.1)


def test_apvisit_headers_and_chip_order():
    spec = read(shared_file("apogee/apVisit-r13-5095-55844-128.fits"))
    assert spec.meta.object_name == "2M01183798+8403419"
    assert spec.meta.barycentric_correction == pytest.approx(11.2977627)
    assert spec.meta.extra["chips"] == ["c", "b", "a"]
    assert np.all(np.diff(spec.wavelength, axis=1) > 0)


def test_payne_bad_pixels_masked():
    spec = read(shared_file("apogee/payne/spectrum_ap_id_2M13012770+5754582_.npz"))
    raw = np.load(shared_file("apogee/payne/spectrum_ap_id_2M13012770+5754582_.npz"))
    assert np.array_equal(spec.mask, raw["spec_err"] > 1)
    visits = read(shared_file("apogee/payne/visit_spectra_ap_id_2M06133561+2433362_.npz"))
    assert visits.meta.snr == pytest.approx(101, abs=2)


def test_tres_header_bcv():
    spec = read(shared_file("tres/WASP14-2009-06-14.hdf5"))
    assert spec.meta.barycentric_correction == pytest.approx(-19.99458)
    assert spec.meta.instrument == "TRES"


def test_apogee_solar_atlas_is_air_al_i_position():
    spec = read(shared_file("apogee/atlas_sun_hband.txt")).slice(16714.0, 16728.0)
    core = spec.wavelength[np.argmin(spec.flux)]
    assert core == pytest.approx(16718.96, abs=0.1)  # Al I in air; vacuum would be 16723.52
