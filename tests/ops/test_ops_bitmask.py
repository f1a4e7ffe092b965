import numpy as np
import pytest

from photosphere.errors import InvalidSpectrumError
from photosphere.ops.bitmask import (
    APOGEE_PIXMASK_BAD_BITS,
    apply_bitmask,
    bit_value,
    bitmask_to_mask,
)
from photosphere.spectrum import EchelleSpectrum, Spectrum, SpectrumMeta


def test_default_bits():
    assert APOGEE_PIXMASK_BAD_BITS == (0, 1, 2, 3, 4, 5, 6, 7, 12)
    assert bit_value(APOGEE_PIXMASK_BAD_BITS) == 0b1_0000_1111_1111
    assert bit_value(["BADPIX", "sig_skyline"]) == 1 + 4096


def test_bitmask_to_mask_default_and_custom():
    bm = np.array([0, 1, 2**7, 2**8, 2**12, 2**13, 2**13 + 1, -32768], dtype=np.int16)
    np.testing.assert_array_equal(bitmask_to_mask(bm), [0, 1, 1, 0, 1, 0, 1, 0])
    np.testing.assert_array_equal(bitmask_to_mask(bm, bits=[13, 15]), [0, 0, 0, 0, 0, 1, 1, 1])
    assert not bitmask_to_mask(bm, bits=[16])[-1]  # int16 sign bit is bit 15, nothing above


def test_apply_bitmask_masks_pixels(rng):
    spec = Spectrum(np.linspace(15200, 15300, 50), rng.normal(1, 0.01, 50), np.full(50, 0.01))
    bm = np.zeros(50, int)
    bm[[3, 10]] = [1 << 1, 1 << 9]  # CRPIX (bad), PERSIST_HIGH (not bad by default)
    out = apply_bitmask(spec, bm)
    assert out.mask[3] and not out.mask[10]
    assert np.isinf(out.sigma[3]) and out.ivar[3] == 0
    assert out.mask.sum() == 1


def test_apply_bitmask_inflates_sigma_without_masking(rng):
    spec = Spectrum(np.linspace(15200, 15300, 50), rng.normal(1, 0.01, 50), np.full(50, 0.01))
    bm = np.zeros(50, int)
    bm[5] = 1 << 12
    out = apply_bitmask(spec, bm, mask=False, inflate=1e4)
    assert not out.mask.any()
    assert out.sigma[5] == pytest.approx(100.0) and out.sigma[4] == 0.01


def test_apply_bitmask_echelle_and_from_meta():
    bm = np.zeros((2, 20), np.int32)
    bm[1, 7] = 1
    bm[0, 3] = 1 << 13  # SIG_TELLURIC: only with bits including 13
    ech = EchelleSpectrum(np.tile(np.linspace(5000, 5010, 20), (2, 1)), np.ones((2, 20)),
                          meta=SpectrumMeta(extra={"bitmask": bm}))
    assert apply_bitmask(ech, bm).mask.sum() == 1
    out = apply_bitmask(ech, bits=["SIG_TELLURIC"])
    assert out.mask[0, 3] and out.mask.sum() == 1
    with pytest.raises(InvalidSpectrumError, match="bitmask"):
        apply_bitmask(EchelleSpectrum(ech.wavelength, ech.flux))


def test_bad_inputs():
    spec = Spectrum(np.linspace(15200, 15300, 50), np.ones(50))
    with pytest.raises(InvalidSpectrumError, match="shape"):
        apply_bitmask(spec, np.zeros(49, int))
    with pytest.raises(InvalidSpectrumError, match="no uncertainties"):
        apply_bitmask(spec, np.zeros(50, int), mask=False)
    with pytest.raises(InvalidSpectrumError, match="integer"):
        apply_bitmask(spec, np.full(50, 0.5))
    with pytest.raises(InvalidSpectrumError, match="unknown bit"):
        bit_value(["NOT_A_BIT"])
    with pytest.raises(InvalidSpectrumError, match=r"0\.\.62"):
        bit_value([70])


@pytest.mark.realdata
def test_real_apvisit_bitmask():
    from conftest import shared_file
    from photosphere.io.apogee import read_apvisit

    spec = read_apvisit(shared_file("apogee/apVisit-r13-5095-55844-128.fits"))
    default = apply_bitmask(spec)  # the reader already masked the default bits
    np.testing.assert_array_equal(default.mask, spec.mask)
    every = apply_bitmask(spec, bits=range(15))
    assert every.mask.sum() > spec.mask.sum()
    assert np.all(every.mask[spec.mask])
