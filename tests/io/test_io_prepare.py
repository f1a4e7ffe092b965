"""io/prepare.py: reading a spectrum for a command (typed errors only), masking flux <= 0."""

from __future__ import annotations

import numpy as np
import pytest

from photosphere.errors import FileFormatError, MissingFileError
from photosphere.io import prepare, registry
from photosphere.spectrum import Spectrum


def test_a_readers_stray_python_error_becomes_a_file_format_error(monkeypatch):
    def broken(path, **kwargs):
        return float("w1")  # a reader meeting a string column: ValueError

    monkeypatch.setattr(registry, "read", broken)
    with pytest.raises(FileFormatError, match=r"spec\.txt could not be read as a spectrum "
                                              r"\(ValueError"):
        prepare.read_spectrum("spec.txt")

    def missing(path, **kwargs):
        raise MissingFileError(f"{path} does not exist")

    monkeypatch.setattr(registry, "read", missing)  # the library's own errors pass unchanged
    with pytest.raises(MissingFileError, match="does not exist"):
        prepare.read_spectrum("spec.txt")


def test_read_spectrum_reads_a_real_text_file(tmp_path):
    path = tmp_path / "star.txt"
    wave = np.linspace(5000.0, 5010.0, 200)
    np.savetxt(path, np.column_stack([wave, np.ones(200)]), header="medium: air\nwavelength flux")
    spectrum = prepare.read_spectrum(str(path))
    np.testing.assert_allclose(spectrum.wavelength, wave)
    assert spectrum.medium == "air"


def test_nonpositive_flux_is_masked_and_counted():
    wave = np.linspace(5000.0, 5100.0, 400)
    flux = np.ones(wave.size)
    flux[100:120] = 0.0
    flux[7] = -3.0
    masked = prepare.mask_nonpositive(Spectrum(wave, flux))
    assert masked.mask.sum() == 21 and masked.meta.extra["masked_nonpositive"] == 21
    assert prepare.mask_nonpositive(masked) is masked  # nothing more to mask
