"""Generic 1D FITS (WCS image / binary table) and 2/3-column text readers."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from photosphere.errors import InvalidSpectrumError, UnitsError
from photosphere.io import identify, read, read_fits1d, read_text


def _write_image(path, flux, sigma_ext=None, **cards):
    h = fits.Header()
    for k, v in cards.items():
        h[k.replace("_", "-") if k == "DC_FLAG" else k] = v
    hdus = [fits.PrimaryHDU(np.asarray(flux, np.float64), header=h)]
    if sigma_ext is not None:
        name, data = sigma_ext
        hdus.append(fits.ImageHDU(np.asarray(data, np.float64), name=name))
    fits.HDUList(hdus).writeto(path)
    return path


@pytest.mark.parametrize(("cards", "first", "step"), [
    ({"CRVAL1": 5000.0, "CDELT1": 0.5, "CRPIX1": 1.0, "CUNIT1": "Angstrom"}, 5000.0, 0.5),
    ({"CRVAL1": 500.0, "CDELT1": 0.05, "CRPIX1": 1.0, "CUNIT1": "nm"}, 5000.0, 0.5),
    ({"CRVAL1": 5001.0, "CD1_1": 0.5, "CRPIX1": 3.0, "CUNIT1": "Angstrom"}, 5000.0, 0.5),
])
def test_linear_wcs_in_angstrom_and_nm(tmp_path, cards, first, step):
    path = _write_image(tmp_path / "s.fits", np.ones(20), CTYPE1="AWAV", **cards)
    spec = read_fits1d(path)
    assert spec.wavelength[0] == pytest.approx(first)
    assert np.allclose(np.diff(spec.wavelength), step)
    assert spec.medium == "air"
    assert identify(path) == "fits1d"


def test_log_linear_iraf_dcflag(tmp_path):
    path = _write_image(tmp_path / "s.fits", np.ones(50), CRVAL1=3.7, CDELT1=1e-5, CRPIX1=1.0,
                        CTYPE1="WAVE", CUNIT1="Angstrom", DC_FLAG=1)
    spec = read_fits1d(path)
    assert spec.medium == "vacuum"
    assert np.allclose(np.log10(spec.wavelength), 3.7 + 1e-5 * np.arange(50))


def test_wave_log_ctype_follows_wcs_paper_iii(tmp_path):
    path = _write_image(tmp_path / "s.fits", np.ones(10), CRVAL1=5000.0, CDELT1=0.1, CRPIX1=1.0,
                        CTYPE1="WAVE-LOG", CUNIT1="Angstrom")
    w = read_fits1d(path).wavelength
    assert np.allclose(w, 5000.0 * np.exp(0.1 * np.arange(10) / 5000.0))


def test_uncertainty_extensions_sigma_and_ivar(tmp_path):
    flux = np.full(20, 10.0)
    cards = {"CRVAL1": 5000.0, "CDELT1": 1.0, "CUNIT1": "Angstrom", "CTYPE1": "AWAV"}
    p1 = _write_image(tmp_path / "a.fits", flux, ("ERROR", np.full(20, 2.0)), **cards)
    p2 = _write_image(tmp_path / "b.fits", flux, ("IVAR", np.full(20, 0.25)), **cards)
    assert np.allclose(read_fits1d(p1).sigma, 2.0)
    assert np.allclose(read_fits1d(p2).sigma, 2.0)


def test_mismatched_uncertainty_shape_is_refused(tmp_path):
    path = _write_image(tmp_path / "a.fits", np.ones(20), ("ERROR", np.ones(19)), CRVAL1=5000.0,
                        CDELT1=1.0, CUNIT1="Angstrom", CTYPE1="AWAV")
    with pytest.raises(InvalidSpectrumError, match=r"shape \(19,\).*\(20,\)"):
        read_fits1d(path)


def test_nan_and_inf_flux_are_masked_not_fatal(tmp_path):
    flux = np.ones(20)
    flux[[2, 5]] = [np.nan, np.inf]
    path = _write_image(tmp_path / "a.fits", flux, CRVAL1=5000.0, CDELT1=1.0,
                        CUNIT1="Angstrom", CTYPE1="AWAV")
    spec = read_fits1d(path)
    assert spec.mask.tolist().count(True) == 2 and np.all(np.isfinite(spec.flux))


def test_all_nan_flux_is_a_typed_error(tmp_path):
    path = _write_image(tmp_path / "a.fits", np.full(20, np.nan), CRVAL1=5000.0, CDELT1=1.0,
                        CUNIT1="Angstrom", CTYPE1="AWAV")
    with pytest.raises(InvalidSpectrumError, match="every flux value"):
        read_fits1d(path)


def test_unitless_implausible_wavelengths_ask_for_a_unit(tmp_path):
    path = _write_image(tmp_path / "a.fits", np.ones(20), CRVAL1=1.5, CDELT1=0.001,
                        CTYPE1="AWAV")
    with pytest.raises(UnitsError, match="wavelength_unit="):
        read_fits1d(path)
    assert read_fits1d(path, wavelength_unit="um").wavelength[0] == pytest.approx(15000.0)


def test_unrecorded_medium_is_assumed_air_and_overridable(tmp_path):
    path = _write_image(tmp_path / "a.fits", np.ones(20), CRVAL1=5000.0, CDELT1=1.0,
                        CUNIT1="Angstrom")
    spec = read_fits1d(path)
    assert spec.medium == "air" and spec.meta.extra["medium_assumed"] is True
    assert "air assumed" in spec.meta.extra["medium_source"]
    given = read_fits1d(path, medium="vacuum")
    assert given.medium == "vacuum" and given.meta.extra["medium_assumed"] is False
    with pytest.raises(UnitsError, match="medium='air' or medium='vacuum'"):
        read_fits1d(path, medium="water")


def test_unrecorded_medium_of_near_infrared_spectrum_is_assumed_vacuum(tmp_path):
    path = _write_image(tmp_path / "a.fits", np.ones(20), CRVAL1=15000.0, CDELT1=1.0,
                        CUNIT1="Angstrom")
    spec = read_fits1d(path)
    assert spec.medium == "vacuum" and spec.meta.extra["medium_assumed"] is True


def test_recorded_medium_is_not_marked_assumed(tmp_path):
    path = _write_image(tmp_path / "a.fits", np.ones(20), CRVAL1=5000.0, CDELT1=1.0,
                        CUNIT1="Angstrom", CTYPE1="WAVE")
    spec = read_fits1d(path)
    assert spec.medium == "vacuum" and spec.meta.extra["medium_assumed"] is False
    assert spec.meta.extra["medium_source"] == "header CTYPE1"


def test_binary_table_spectrum_with_instrument_frame(tmp_path):
    t = Table({"wavelength": np.linspace(8656, 8768, 30), "flux": np.ones(30),
               "uncertainty": np.full(30, 0.01)})
    t["wavelength"].unit = "Angstrom"
    hdu = fits.BinTableHDU(t)
    hdu.header["INSTRUME"] = "HPF"
    hdu.header["OBJECT"] = "WASP_69"
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(tmp_path / "t.fits")
    assert identify(tmp_path / "t.fits") == "fits_table"
    spec = read(tmp_path / "t.fits")
    assert spec.medium == "vacuum" and spec.meta.object_name == "WASP_69"
    assert spec.median_snr() == pytest.approx(100.0)


# ------------------------------------------------------------------------------------ text
def test_two_and_three_column_text(tmp_path):
    w = np.linspace(5000, 5010, 11)
    np.savetxt(tmp_path / "a.txt", np.c_[w, np.ones(11)])
    np.savetxt(tmp_path / "b.txt", np.c_[w, np.ones(11), np.full(11, 0.1)],
               header="medium: air")
    a = read_text(tmp_path / "a.txt", medium="vacuum")
    b = read(tmp_path / "b.txt")
    assert a.medium == "vacuum" and not a.has_uncertainty
    assert b.medium == "air" and np.allclose(b.sigma, 0.1)


def test_text_without_frame_assumes_air(tmp_path):
    np.savetxt(tmp_path / "a.txt", np.c_[np.linspace(5000, 5010, 11), np.ones(11)])
    spec = read_text(tmp_path / "a.txt")
    assert spec.medium == "air" and spec.meta.extra["medium_assumed"] is True
    assert read_text(tmp_path / "a.txt", medium="vacuum").medium == "vacuum"


def test_csv_with_unit_in_header_and_descending_rows(tmp_path):
    w = np.linspace(510.0, 500.0, 11)
    rows = "\n".join(f"{x},{y}" for x, y in zip(w, np.linspace(1, 2, 11), strict=True))
    (tmp_path / "a.csv").write_text("wavelength_nm,flux\n" + rows + "\n")
    spec = read_text(tmp_path / "a.csv", medium="air")
    assert spec.wavelength[0] == pytest.approx(5000.0)
    assert spec.flux[0] == pytest.approx(2.0)


def test_non_monotonic_text_is_refused_with_row(tmp_path):
    np.savetxt(tmp_path / "a.txt", np.c_[[5000, 5001, 4999, 5003], np.ones(4)])
    with pytest.raises(InvalidSpectrumError, match=r"not monotonic.*row 2"):
        read_text(tmp_path / "a.txt", medium="air")


def test_duplicate_wavelength_rows_are_averaged(tmp_path):
    np.savetxt(tmp_path / "a.txt", np.c_[[5000, 5001, 5001, 5002], [1.0, 2.0, 4.0, 1.0]])
    spec = read_text(tmp_path / "a.txt", medium="air")
    assert spec.flux.tolist() == [1.0, 3.0, 1.0]
    assert spec.meta.extra["merged_duplicate_rows"] == 1
    with pytest.raises(InvalidSpectrumError, match="appears twice"):
        read_text(tmp_path / "a.txt", medium="air", merge_duplicates=False)


def test_text_nonfinite_wavelength_and_flux(tmp_path):
    (tmp_path / "a.txt").write_text("5000 1\n5001 nan\n5002 inf\n5003 1\n")
    spec = read_text(tmp_path / "a.txt", medium="air")
    assert spec.mask.tolist() == [False, True, True, False]
    (tmp_path / "b.txt").write_text("5000 1\nnan 1\n5003 1\n")
    with pytest.raises(InvalidSpectrumError, match="row 1"):
        read_text(tmp_path / "b.txt", medium="air")


def test_text_with_wrong_column_count(tmp_path):
    from photosphere.errors import FileFormatError

    np.savetxt(tmp_path / "a.txt", np.ones((5, 4)) * 5000)
    with pytest.raises(FileFormatError, match="4 columns"):
        read_text(tmp_path / "a.txt", medium="air")


def test_spectrum_in_first_extension_with_error_extension(tmp_path):
    h0 = fits.Header({"INSTRUME": "UVES", "OBJECT": "HD 1"})
    h1 = fits.Header({"CRVAL1": 4800.0, "CDELT1": 0.02, "CUNIT1": "Angstrom"})
    fits.HDUList([fits.PrimaryHDU(header=h0), fits.ImageHDU(np.full(30, 5.0), h1, name="FLUX"),
                  fits.ImageHDU(np.full(30, 0.5), name="ERR")]).writeto(tmp_path / "e.fits")
    assert identify(tmp_path / "e.fits") == "fits1d"
    spec = read(tmp_path / "e.fits")
    assert spec.medium == "air"  # from the instrument (UVES pipeline: air)
    assert spec.meta.object_name == "HD 1"
    assert spec.median_snr() == pytest.approx(10.0)
    assert spec.wavelength[-1] == pytest.approx(4800.0 + 0.02 * 29)
