"""Synthetic files in the real layouts of the benchmark-star formats (HIRES order images and
SpecMatch tables, IRAF multispec, MILES, GBS library, named-column CSV, three-file text
folders): dispersion functions against independent references, the air default and its
override, and clear typed errors for bad or unsupported files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.io import fits
from io_fixtures import write_harps_e2ds
from numpy.polynomial import chebyshev, legendre
from scipy.interpolate import BSpline

from photosphere.cli import build_parser, main
from photosphere.errors import FileFormatError, MissingFileError, UnitsError
from photosphere.io import identify, read
from photosphere.io.iraf_multispec import order_wavelength, parse_spec
from photosphere.io.registry import PRODUCT_TABLE, PRODUCTS
from photosphere.spectrum import EchelleSpectrum


# ----------------------------------------------------------------------------- IRAF multispec
def _wat_cards(text: str) -> dict[str, str]:
    return {f"WAT2_{i // 68 + 1:03d}": text[i:i + 68] for i in range(0, len(text), 68)}


def write_multispec(path, specs: list[str], data: np.ndarray, **keys) -> None:
    header = fits.Header({"WAT0_001": "system=multispec",
                          "WAT1_001": "wtype=multispec label=Wavelength units=angstroms",
                          "CTYPE1": "MULTISPE", "CTYPE2": "MULTISPE", **keys})
    attr = "wtype=multispec " + " ".join(f'spec{i + 1} = "{s}"' for i, s in enumerate(specs))
    for key, value in _wat_cards(attr).items():
        header[key] = value
    fits.PrimaryHDU(data, header=header).writeto(path)


def test_multispec_polynomials_match_numpy():
    p = np.arange(1.0, 101.0)
    n = (p - 50.5) / 49.5
    c = [5000.0, 20.0, -0.3, 0.05]
    cheb = parse_spec(f"1 60 2 0 0 100 0 0 0 1 3.5 1 4 1 100 {' '.join(map(str, c))}", "t")
    leg = parse_spec(f"2 61 2 0 0 100 0 0 0 1 -2.0 2 4 1 100 {' '.join(map(str, c))}", "t")
    assert np.allclose(order_wavelength(cheb, p), 3.5 + chebyshev.chebval(n, c))
    assert np.allclose(order_wavelength(leg, p), -2.0 + legendre.legval(n, c))
    assert cheb.beam == 60 and leg.functions[0][2] == 2


def test_multispec_splines_and_arrays_match_references():
    p = np.arange(1.0, 41.0)
    s = (p - 1.0) / 39.0 * 4
    c3 = [4990.0, 4995.0, 5001.0, 5004.0, 5010.0, 5013.0, 5020.0]  # npieces + 3
    cubic = parse_spec(f"1 1 2 0 0 40 0 0 0 1 0 3 4 1 40 {' '.join(map(str, c3))}", "t")
    # IRAF's cubic basis is 6 x the uniform cubic B-spline
    ref = 6 * BSpline(np.arange(-3.0, 8.0), np.array(c3), 3)(s)
    assert np.allclose(order_wavelength(cubic, p), ref)
    c1 = [5000.0, 5003.0, 5007.0, 5008.0, 5012.0]  # npieces + 1
    linear = parse_spec(f"1 1 2 0 0 40 0 0 0 1 0 4 4 1 40 {' '.join(map(str, c1))}", "t")
    assert np.allclose(order_wavelength(linear, p), np.interp(s, np.arange(5.0), c1))
    coords = 5000.0 + 0.1 * np.arange(40) + 1e-4 * np.arange(40) ** 2
    table = parse_spec(f"1 1 2 0 0 40 0 0 0 1 0 5 40 {' '.join(map(str, coords))}", "t")
    assert np.allclose(order_wavelength(table, p), coords)
    sampled = parse_spec("1 1 2 0 0 40 0 0 0 1 0 6 3 0 1 5000 20 5002 40 5003", "t")
    assert np.allclose(order_wavelength(sampled, p),
                       np.interp(p, [1, 20, 40], [5000, 5002, 5003]))


def test_multispec_weighted_functions_and_doppler_factor():
    # two calibrations averaged (wt 0.5 each), z = 1e-4: w = Σ wt (w0 + W(p)) / (1 + z)
    sol = parse_spec("1 1 2 0 0 10 1e-4 0 0 0.5 0 1 2 1 10 5000 1 0.5 2 1 2 1 10 5000 3", "t")
    p = np.arange(1.0, 11.0)
    n = (p - 5.5) / 4.5
    expected = (0.5 * (5000 + 1 * n) + 0.5 * (2 + 5000 + 3 * n)) / (1 + 1e-4)
    assert np.allclose(order_wavelength(sol, p), expected)
    log = parse_spec("1 1 1 3.7 1e-5 10 0 0 0", "t")
    assert np.allclose(order_wavelength(log, p), 10 ** (3.7 + 1e-5 * (p - 1)))


def test_multispec_file_reads_as_echelle_with_sigma_band(tmp_path):
    rng = np.random.default_rng(4)
    n_pix = 50
    flux = 1 + 0.01 * rng.standard_normal((2, n_pix))
    data = np.stack([flux, np.full((2, n_pix), 0.02)])  # (bands, orders, pixels)
    specs = ["1 70 0 5100.0 0.05 50 0 0 0",                       # red order first
             "2 71 2 0 0 50 0 0 0 1 0 1 3 1 50 5020.0 1.2 0.001"]  # chebyshev
    write_multispec(tmp_path / "mike.fits", specs, data, BANDID1="spectrum",
                    BANDID2="sigma per pixel", OBJECT="HD 1")
    assert identify(tmp_path / "mike.fits") == "iraf_multispec"
    spec = read(tmp_path / "mike.fits")
    assert isinstance(spec, EchelleSpectrum) and spec.shape == (2, n_pix)
    assert list(spec.order_numbers) == [71, 70]  # sorted blue to red
    assert spec.wavelength[1, 0] == pytest.approx(5100.0)
    assert spec.wavelength[1, -1] == pytest.approx(5100.0 + 0.05 * 49)
    assert np.allclose(spec.sigma, 0.02) and spec.meta.object_name == "HD 1"
    assert spec.medium == "air" and spec.meta.extra["medium_assumed"]


def test_multispec_missing_order_attribute_is_a_clear_error(tmp_path):
    write_multispec(tmp_path / "m.fits", ["1 70 0 5100.0 0.05 50 0 0 0"], np.ones((2, 50)))
    with pytest.raises(FileFormatError, match="lack spec2"):
        read(tmp_path / "m.fits")


def test_multispec_uncalibrated_order_is_a_clear_error(tmp_path):
    write_multispec(tmp_path / "raw.fits", ["1 70 -1 1 1 50 0 0 0"], np.ones((1, 50)))
    with pytest.raises(FileFormatError, match=r"raw\.fits.*not wavelength calibrated"):
        read(tmp_path / "raw.fits")


def test_multispec_unknown_function_type(tmp_path):
    with pytest.raises(FileFormatError, match="not an IRAF multispec type"):
        parse_spec("1 1 2 0 0 10 0 0 0 1 0 9 2 1 10", "t")


# ------------------------------------------------------------------------------------- HIRES
def write_hires_orders(path, *, decker="C2", n_orders=3, n_pix=200) -> np.ndarray:
    wave = np.array([6000.0 - 100 * k + 0.05 * np.arange(n_pix) for k in range(n_orders)])
    counts = np.full(wave.shape, 400.0)
    counts[0, 5] = 0.0  # a dead pixel
    h = fits.Header({"INSTRUME": "HIRES: High Resolution Echelle Spectrometer",
                     "DECKNAME": decker, "TARGNAME": "hd0001"})
    fits.HDUList([fits.PrimaryHDU(counts.astype(np.float32), header=h),
                  fits.ImageHDU(np.full(wave.shape, 0.05, np.float32)),
                  fits.ImageHDU(wave)]).writeto(path)
    return wave


def test_hires_order_image_synthetic(tmp_path):
    write_hires_orders(tmp_path / "rj1.fits")
    assert identify(tmp_path / "rj1.fits") == "hires_orders"
    spec = read(tmp_path / "rj1.fits")
    assert spec.shape == (3, 200) and np.all(np.diff(spec.wavelength[:, 0]) > 0)
    assert np.allclose(spec.sigma[~spec.mask], 0.05 * 400.0)
    assert spec.mask.sum() == 1 and spec.meta.object_name == "hd0001"
    assert spec.meta.extra["resolution"] == 49_000.0  # decker C2, 0.861"
    assert spec.medium == "air" and spec.meta.extra["medium_assumed"]
    assert read(tmp_path / "rj1.fits", medium="vacuum").medium == "vacuum"


def test_hires_table_with_string_column_is_refused(tmp_path):
    cols = [fits.Column("s", "D", array=np.ones(5)),
            fits.Column("w", "10A", array=np.array(["5000.0"] * 5)),
            fits.Column("serr", "D", array=np.full(5, 0.01))]
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols)]).writeto(
        tmp_path / "x_adj.fits")
    with pytest.raises(FileFormatError, match=r"column 'w' holds .* not numbers"):
        read(tmp_path / "x_adj.fits")


def test_fits_table_with_string_wavelength_column_is_refused(tmp_path):
    cols = [fits.Column("wavelength", "12A", array=np.array(["5000.0 A"] * 5)),
            fits.Column("flux", "D", array=np.ones(5))]
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols)]).writeto(
        tmp_path / "t.fits")
    with pytest.raises(FileFormatError, match=r"t\.fits.*column 'wavelength' holds"):
        read(tmp_path / "t.fits")


def test_truncated_hires_file_names_the_file_and_the_fix(tmp_path, capsys):
    write_hires_orders(tmp_path / "rj1.fits")
    raw = (tmp_path / "rj1.fits").read_bytes()
    (tmp_path / "cut.fits").write_bytes(raw[: len(raw) - 4000])
    with pytest.raises(FileFormatError, match=r"cut\.fits.*(truncated|download it again)"):
        read(tmp_path / "cut.fits")
    assert main(["info", str(tmp_path / "cut.fits")]) == 2
    err = capsys.readouterr().err
    assert "cut.fits" in err and "Traceback" not in err


# ------------------------------------------------------------------------- MILES, GBS library
def test_miles_synthetic(tmp_path):
    h = fits.Header({"TPLLIB": "MILES", "FWHM": 2.5, "CRPIX1": 1, "CRVAL1": 3540.5,
                     "CDELT1": 0.9})
    fits.PrimaryHDU(np.linspace(1, 2, 100), header=h).writeto(tmp_path / "m.fits")
    assert identify(tmp_path / "m.fits") == "miles"
    spec = read(tmp_path / "m.fits")
    assert spec.meta.extra["resolution"] == pytest.approx(5500 / 2.5)
    assert spec.medium == "air" and not spec.meta.extra["medium_assumed"]
    assert read(tmp_path / "m.fits", medium="vacuum").medium == "vacuum"


def test_gbs_library_synthetic(tmp_path):
    h = fits.Header({"ORIGIN": "iSpec", "CUNIT1": "Angstrom", "CTYPE1": "AWAV",
                     "CDELT1": 0.01, "CRVAL1": 4800.0, "CRPIX1": 1})
    fits.PrimaryHDU(np.ones(300, np.float32), header=h).writeto(tmp_path / "HARPS.GBOG_x.fits")
    assert identify(tmp_path / "HARPS.GBOG_x.fits") == "ispec_fits"
    spec = read(tmp_path / "HARPS.GBOG_x.fits")
    assert spec.medium == "air" and not spec.meta.extra["medium_assumed"]
    assert spec.meta.instrument == "HARPS" and "resolution" not in spec.meta.extra


# ------------------------------------------------------------------------------------- CSV
def test_csv_nm_column_converted_and_vacuum_from_the_name(tmp_path):
    w = np.linspace(500.0, 501.0, 11)
    rows = "\n".join(f"{x},{1.0},{0.01}" for x in w)
    (tmp_path / "a.csv").write_text("# a comment\nwave_vac_nm,flux,err\n" + rows + "\n")
    assert identify(tmp_path / "a.csv") == "csv_table"
    spec = read(tmp_path / "a.csv")
    assert spec.wavelength[0] == pytest.approx(5000.0) and spec.medium == "vacuum"
    assert not spec.meta.extra["medium_assumed"] and np.allclose(spec.sigma, 0.01)


def test_ispec_waveobs_is_nm_and_tab_separated(tmp_path):
    w = np.linspace(422.0, 423.0, 21)
    rows = "\n".join(f"{x}\t{1.0}\t{0.02}" for x in w)
    (tmp_path / "g.csv").write_text("waveobs\tflux\terr\n" + rows + "\n")
    spec = read(tmp_path / "g.csv")
    assert spec.wavelength_range == pytest.approx((4220.0, 4230.0))
    assert spec.medium == "air" and spec.meta.extra["medium_assumed"]
    assert "iSpec" in spec.meta.extra["wavelength_note"]


def test_csv_without_wavelength_column_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "b.csv").write_text("order,flux,err\n1,1.0,0.1\n2,1.0,0.1\n")
    with pytest.raises(FileFormatError, match=r"b\.csv.*no wavelength column among"):
        read(tmp_path / "b.csv")
    assert main(["info", str(tmp_path / "b.csv")]) == 2
    err = capsys.readouterr().err
    assert "wavelength_nm" in err and "Traceback" not in err


def test_ragged_csv_names_the_row(tmp_path):
    (tmp_path / "r.csv").write_text("wavelength,flux\n5000,1\n5001\n")
    with pytest.raises(FileFormatError, match=r"table row 3 .* has 1 values"):
        read(tmp_path / "r.csv")


# ---------------------------------------------------------------------------- text folders
def _write_folder(folder, wave, flux, ivar):
    folder.mkdir()
    np.savetxt(folder / "wavelengths_flat.txt", wave)
    np.savetxt(folder / "flux_STAR_flat.txt", flux)
    np.savetxt(folder / "ivar_STAR_flat.txt", ivar)


def test_text_folder_orders_and_sigma(tmp_path):
    red, blue = 6000 + 0.1 * np.arange(30), 5000 + 0.1 * np.arange(30)
    _write_folder(tmp_path / "star", np.r_[red, blue], np.r_[np.ones(30), 0.9 * np.ones(30)],
                  np.full(60, 400.0))
    assert identify(tmp_path / "star") == "text_folder"
    spec = read(tmp_path / "star")
    assert isinstance(spec, EchelleSpectrum) and spec.shape == (2, 30)
    assert spec.wavelength[0, 0] == pytest.approx(5000.0) and spec.flux[0, 0] == 0.9
    assert np.allclose(spec.sigma, 0.05) and spec.flux_unit == "normalized"


def test_text_folder_uneven_segments_become_one_sorted_spectrum(tmp_path):
    wave = np.r_[5010 + 0.1 * np.arange(20), 5000 + 0.1 * np.arange(30)]
    _write_folder(tmp_path / "s", wave, np.ones(50), np.full(50, 100.0))
    spec = read(tmp_path / "s")
    assert spec.flux.ndim == 1 and np.all(np.diff(spec.wavelength) > 0)


def test_folder_without_the_three_files_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "f").mkdir()
    np.savetxt(tmp_path / "f" / "flux_x.txt", np.ones(5))
    with pytest.raises(FileFormatError, match=r"f is a folder .* wavelength\*\.txt"):
        read(tmp_path / "f")
    assert main(["info", str(tmp_path / "f")]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_text_folder_lengths_must_agree(tmp_path):
    _write_folder(tmp_path / "s", 5000 + np.arange(10.0), np.ones(9), np.ones(10))
    with pytest.raises(FileFormatError, match="one line per pixel"):
        read(tmp_path / "s")


def test_text_folder_reader_refuses_a_file(tmp_path):
    from photosphere.io.text_folder import read_text_folder

    (tmp_path / "a.txt").write_text("1 2\n")
    with pytest.raises(MissingFileError, match="not a folder"):
        read_text_folder(tmp_path / "a.txt")


# ----------------------------------------------------------------- medium option, registry
def test_medium_contradicting_a_fixed_frame_product_is_refused(tmp_path):
    files = write_harps_e2ds(tmp_path)
    assert read(files["e2ds"], medium="air").medium == "air"
    with pytest.raises(UnitsError, match="--medium vacuum"):
        read(files["e2ds"], medium="vacuum")


def test_info_json_override_and_assumption(tmp_path, capsys):
    write_hires_orders(tmp_path / "rj1.fits")
    assert main(["info", str(tmp_path / "rj1.fits"), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["medium"] == "air" and d["medium_assumed"] is True
    assert "air assumed" in d["medium_source"] and d["frame"].startswith("observed")
    assert d["resolution"] == 49_000.0 and d["flux_unit"] == "counts" and not d["normalized"]


@pytest.mark.parametrize("argv", [
    ["info", "x"], ["fit", "x"], ["lines", "fit", "x", "--lines", "l.ecsv"],
    ["lines", "clone", "x", "-o", "l.ecsv"], ["nn", "predict", "x"],
    ["cannon", "test", "m.h5"], ["grid", "calibrate-lines", "-o", "s.ecsv"],
])
def test_every_command_that_reads_spectra_takes_medium(argv):
    args = build_parser().parse_args([*argv, "--medium", "vacuum"])
    assert args.medium == "vacuum"


def test_one_product_table():
    names = [p.name for p in PRODUCT_TABLE]
    assert len(names) == len(set(names)) and set(names) == set(PRODUCTS)
    for product in PRODUCT_TABLE:
        assert callable(product.identify) and callable(product.read)
        assert product.container in ("fits", "hdf5", "npz", "text", "folder")
        assert product.is_spectrum or product.summarise is not None
