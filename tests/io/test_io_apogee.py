"""APOGEE readers on fixture files written in the DR17 layouts."""

from __future__ import annotations

import numpy as np
import pytest
from io_fixtures import apstar_log_wavelength, write_allstar, write_apstar, write_apvisit

from photosphere import EchelleSpectrum, Spectrum
from photosphere.errors import FileFormatError, InvalidSpectrumError
from photosphere.io import identify, read, read_allstar, read_apstar, read_apvisit, select_allstar
from photosphere.io.apogee import apstar_wavelength, bad_pixel_mask


def test_apstar_wavelength_grid_is_dr17_log_lambda():
    w = apstar_wavelength()
    assert w.shape == (8575,)
    assert w[0] == pytest.approx(10 ** 4.179)
    assert w[-1] == pytest.approx(10 ** (4.179 + 6e-6 * 8574))
    assert np.allclose(np.diff(np.log10(w)), 6e-6)


def test_apstar_combined_row_is_default(tmp_path):
    truth = write_apstar(tmp_path / "apStar-dr17-2M00000002+7417074.fits", n_visits=3)
    spec = read_apstar(tmp_path / "apStar-dr17-2M00000002+7417074.fits")
    assert isinstance(spec, Spectrum)
    assert spec.medium == "vacuum"
    assert np.allclose(spec.wavelength, apstar_log_wavelength())
    good = ~spec.mask
    assert np.allclose(spec.flux[good], truth["flux"][0][good])
    assert spec.meta.object_name == "2M00000002+7417074"
    assert spec.meta.extra["n_visits"] == 3
    assert spec.meta.snr == pytest.approx(123.4)


def test_apstar_masks_bad_bits_zero_and_huge_errors(tmp_path):
    write_apstar(tmp_path / "a.fits", n_visits=3)
    spec = read_apstar(tmp_path / "a.fits")
    assert spec.mask[100] and spec.mask[300]  # BADPIX, SIG_SKYLINE
    assert not spec.mask[200]  # PERSIST_HIGH is not a bad bit
    assert spec.mask[400]  # error 1e10
    assert spec.mask[:5].all()  # zero error
    assert spec.mask.sum() == 8
    assert np.all(spec.ivar[spec.mask] == 0)
    assert spec.meta.extra["bitmask"][200] == 1 << 9


def test_apstar_individual_visits_skip_the_two_combined_rows(tmp_path):
    truth = write_apstar(tmp_path / "a.fits", n_visits=3)
    for k in range(3):
        spec = read_apstar(tmp_path / "a.fits", visit=k)
        assert np.median(spec.flux) == pytest.approx(np.median(truth["flux"][k + 2]), abs=0.2)
    stack = read_apstar(tmp_path / "a.fits", visit="all")
    assert isinstance(stack, EchelleSpectrum)
    assert stack.shape == (3, 8575)
    assert stack.meta.extra["row_kind"] == "visit"


def test_apstar_single_visit_layout_is_1d(tmp_path):
    write_apstar(tmp_path / "a.fits", n_visits=1)
    assert read_apstar(tmp_path / "a.fits").flux.shape == (8575,)
    assert len(read_apstar(tmp_path / "a.fits", visit=0)) == 8575


def test_apstar_visit_out_of_range_names_the_valid_range(tmp_path):
    write_apstar(tmp_path / "a.fits", n_visits=3)
    with pytest.raises(InvalidSpectrumError, match=r"holds 3 visit.*0\.\.2"):
        read_apstar(tmp_path / "a.fits", visit=3)


def test_identify_and_read_dispatch_apstar(tmp_path):
    write_apstar(tmp_path / "x.fits", n_visits=2)
    assert identify(tmp_path / "x.fits") == "apogee_apstar"
    assert len(read(tmp_path / "x.fits", visit=1)) == 8575


def test_apvisit_chips_blue_to_red_increasing(tmp_path):
    truth = write_apvisit(tmp_path / "apVisit-x.fits")
    spec = read_apvisit(tmp_path / "apVisit-x.fits")
    assert spec.shape == (3, 4096)
    assert np.all(np.diff(spec.wavelength, axis=1) > 0)
    assert spec.wavelength[0, 0] < spec.wavelength[1, 0] < spec.wavelength[2, 0]
    assert spec.meta.extra["chips"] == ["c", "b", "a"]
    # chip a (file row 0) is now the last row, reversed: file pixel 10 -> index 4085
    assert spec.mask[2, 4095 - 10]
    assert spec.flux[2, 4095 - 10] == pytest.approx(truth["flux"][0, 10])
    assert spec.meta.barycentric_correction == pytest.approx(11.3)
    assert identify(tmp_path / "apVisit-x.fits") == "apogee_apvisit"


def test_bad_pixel_mask_bits():
    flags = np.array([0, 1, 1 << 9, 1 << 12 | 1 << 9])
    assert bad_pixel_mask(flags).tolist() == [False, True, False, True]
    assert bad_pixel_mask(flags, bits=(9,)).tolist() == [False, False, True, True]


def test_select_allstar_cannon_cuts(tmp_path):
    write_allstar(tmp_path / "allStar.fits")
    table = read_allstar(tmp_path / "allStar.fits")
    assert identify(tmp_path / "allStar.fits") == "apogee_allstar"
    sel = select_allstar(table)
    # kept: M15 giant and N6791 giant; dropped: dwarf, metal-poor, -9999 and NaN labels,
    # low S/N, STAR_BAD, other field, duplicate
    assert list(sel["APOGEE_ID"]) == ["2M21295618+1210353", "2M19205338+3748282"]
    assert sel.meta["selection"]["n_in"] == 10
    loose = select_allstar(table, fields=None, min_snr=None, max_logg=None, max_teff=None,
                           min_feh=None, exclude_star_bad=False, drop_duplicates=False)
    assert len(loose) == 8  # only the two rows with missing labels go


def test_select_allstar_missing_column_is_a_typed_error(tmp_path):
    write_allstar(tmp_path / "allStar.fits")
    table = read_allstar(tmp_path / "allStar.fits")
    table.remove_column("SI_FE")
    with pytest.raises(FileFormatError, match="SI_FE"):
        select_allstar(table)


def test_read_refuses_allstar_and_names_the_reader(tmp_path):
    write_allstar(tmp_path / "allStar.fits")
    with pytest.raises(FileFormatError, match="read_allstar"):
        read(tmp_path / "allStar.fits")


def test_read_allstar_columns_and_errors(tmp_path):
    write_allstar(tmp_path / "allStar.fits")
    t = read_allstar(tmp_path / "allStar.fits", columns=["APOGEE_ID", "TEFF"])
    assert t.colnames == ["APOGEE_ID", "TEFF"] and t["APOGEE_ID"][0] == "2M21295618+1210353"
    with pytest.raises(FileFormatError, match="NOPE"):
        read_allstar(tmp_path / "allStar.fits", columns=["NOPE"])
