"""The RV the network's input is shifted by: cross-correlation with the embedded grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from photosphere import Spectrum
from photosphere.grids.load import load_grid_model
from photosphere.infer.chain import ObservationChain
from photosphere.nn.rv import estimate_rv
from photosphere.spectrum import SpectrumMeta


def _observed(model, wave, labels, rv, snr, seed):
    """``model`` at ``labels`` shifted by ``rv`` km/s, at R 60 000, with white noise at
    ``snr``: a Spectrum carrying its resolution."""
    dummy = Spectrum(wave, np.ones_like(wave), np.ones_like(wave), medium="air")
    chain = ObservationChain(model, dummy, resolution=60_000, continuum_degree=None,
                             rv_bounds=(rv - 1, rv + 1))
    with torch.no_grad():
        (flux,), _ = chain.predict(torch.as_tensor(chain.theta_from({**labels, "rv": rv})))
    noisy = flux.numpy() + np.random.default_rng(seed).normal(0, 1 / snr, flux.shape)
    return Spectrum(wave, noisy, np.full_like(wave, 1 / snr), medium="air",
                    meta=SpectrumMeta(extra={"resolution": 60_000.0}))


@pytest.mark.parametrize("rv", [-47.3, 0.0, 18.3])
def test_estimate_rv_finds_the_shift_of_a_grid_star(rv):
    """A 6200 K star (not the G-dwarf template) shifted by rv, at R 60 000, S/N 150."""
    star = _observed(load_grid_model(), np.linspace(5080.0, 5320.0, 12000),
                     {"teff": 6200.0, "logg": 4.2, "feh": -0.3, "vsini": 6.0}, rv, 150, 3)
    assert estimate_rv(star) == pytest.approx(rv, abs=0.5)


def test_the_command_takes_auto_or_a_velocity():
    import argparse

    from photosphere.cli.nn import _rv_option

    assert _rv_option("auto") == "auto" and _rv_option("-4.8") == -4.8
    with pytest.raises(argparse.ArgumentTypeError):
        _rv_option("nan")


def test_a_spectrum_without_the_grids_window_is_cross_correlated_with_the_optical_model():
    """No pixel in 5050-5350 Å: the RV comes from the shipped optical emulator's windows
    (6100-6180 Å here), as the optical network needs."""
    from photosphere.nn.rv import _optical_model

    rv = 23.7
    star = _observed(_optical_model(), np.linspace(6105.0, 6175.0, 4000),
                     {"teff": 5400.0, "logg": 4.5, "feh": -0.2, "alpha": 0.1, "vmic": 1.0,
                      "vsini": 3.0}, rv, 200, 5)
    assert estimate_rv(star) == pytest.approx(rv, abs=0.5)


def test_a_spectrum_outside_every_model_says_so():
    from photosphere.errors import OutOfGridError

    wave = np.linspace(7000.0, 7100.0, 4000)
    flux = 1 - 0.3 * np.exp(-0.5 * ((wave % 2.0) - 1.0) ** 2 / 0.01)
    star = Spectrum(wave, flux, np.full_like(wave, 0.01), medium="air")
    with pytest.raises(OutOfGridError, match=r"5050-5350 Å.*optical model's windows"):
        estimate_rv(star)
