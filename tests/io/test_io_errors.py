"""Bad input: every user mistake is a typed PhotosphereError naming the problem and the fix."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from io_fixtures import write_harps_e2ds, write_tres

from photosphere.errors import FileFormatError, MissingFileError, PhotosphereError
from photosphere.io import identify, read, read_apstar, read_e2ds, read_tres_hdf5


def _fits_spectrum(path):
    h = fits.Header({"CRVAL1": 5000.0, "CDELT1": 0.1, "CUNIT1": "Angstrom", "CTYPE1": "AWAV"})
    fits.PrimaryHDU(np.ones(5000), header=h).writeto(path)
    return path


def test_missing_file(tmp_path):
    with pytest.raises(MissingFileError, match="does not exist; check the path"):
        read(tmp_path / "nope.fits")


def test_empty_file(tmp_path):
    (tmp_path / "empty.fits").write_bytes(b"")
    with pytest.raises(FileFormatError, match="empty"):
        read(tmp_path / "empty.fits")


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(FileFormatError, match="directory"):
        read(tmp_path)


def test_truncated_fits(tmp_path):
    path = _fits_spectrum(tmp_path / "full.fits")
    data = path.read_bytes()
    (tmp_path / "cut.fits").write_bytes(data[: len(data) // 2])
    with pytest.raises(FileFormatError, match="truncated"):
        read(tmp_path / "cut.fits")
    with pytest.raises(FileFormatError, match="truncated"):
        read_apstar(tmp_path / "cut.fits")


def test_corrupt_fits_header(tmp_path):
    (tmp_path / "bad.fits").write_bytes(b"SIMPLE  = garbage" + b"\x00" * 3000)
    with pytest.raises(FileFormatError):
        read(tmp_path / "bad.fits")


def test_random_binary_is_unknown_product(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "x.bin").write_bytes(b"\x00\x01" + rng.bytes(100))
    with pytest.raises(FileFormatError, match=r"does not recognise|not FITS"):
        identify(tmp_path / "x.bin")


def test_fits_of_unknown_layout(tmp_path):
    fits.PrimaryHDU(np.ones((3, 3, 3, 3))).writeto(tmp_path / "cube.fits")
    with pytest.raises(FileFormatError, match="photosphere reads these products"):
        read(tmp_path / "cube.fits")


def test_truncated_hdf5(tmp_path):
    write_tres(tmp_path / "ok.hdf5")
    data = (tmp_path / "ok.hdf5").read_bytes()
    (tmp_path / "cut.hdf5").write_bytes(data[:600])
    with pytest.raises(FileFormatError, match="HDF5"):
        read_tres_hdf5(tmp_path / "cut.hdf5")


def test_corrupt_npz(tmp_path):
    (tmp_path / "x.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(FileFormatError, match="npz"):
        read(tmp_path / "x.npz")


def test_unknown_option_for_reader(tmp_path):
    path = _fits_spectrum(tmp_path / "s.fits")
    with pytest.raises(FileFormatError, match="does not take visit; it takes flux_unit, medium"):
        read(path, visit=2)


def test_missing_wave_solution_names_the_wave_file(tmp_path):
    truth = write_harps_e2ds(tmp_path, with_wave=False)
    with fits.open(truth["e2ds"], mode="update") as hdul:
        for key in [k for k in hdul[0].header if "COEFF LL" in k or "DEG LL" in k]:
            del hdul[0].header[key]
    with pytest.raises(MissingFileError, match=r"_wave_A\.fits.*wave=PATH"):
        read_e2ds(truth["e2ds"])


def test_all_errors_share_the_base_class():
    for cls in (FileFormatError, MissingFileError):
        assert issubclass(cls, PhotosphereError)
