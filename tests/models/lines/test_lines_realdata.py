"""The line model on the real files in ../shared/data (skipped when absent)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_file
from photosphere.io import read
from photosphere.models.lines.clone import clone_spectrum
from photosphere.models.lines.telluric import clone_telluric, read_telluric

pytestmark = pytest.mark.realdata


@pytest.mark.slow
def test_clone_a_piece_of_the_uves_sun():
    sun = read(shared_file("optical/uves_sun_norm.txt")).slice(5170.0, 5176.0)
    result = clone_spectrum(sun.wavelength, sun.flux, prominence=0.003, n_steps=150,
                            n_rounds=2, progress=False)
    assert result.model.n_lines > 20
    assert result.final.rms < 0.01
    assert result.final.rms < 0.2 * result.initial.rms


def test_telfit_hpf_template_clones_into_telluric_lines():
    wave, trans = read_telluric(shared_file("telluric/telfit_hpf_temp286_hum050.csv"),
                                wavelength_min=8650.0, wavelength_max=8770.0)
    assert np.all(np.diff(wave) > 0) and trans.max() <= 1.0
    model, results = clone_telluric({"all": (wave, trans)}, n_steps=100, progress=False)
    assert results["all"].final.max_abs < 0.005
    assert model.names == ["all"]
