"""End-to-end Turbospectrum syntheses of a small window around the Mg b triplet."""

from __future__ import annotations

import numpy as np
import pytest
from _synth_fixtures import atmospheres_or_skip, turbospectrum_or_skip

from photosphere.grids.synth.turbospectrum import synthesize

pytestmark = [pytest.mark.turbospectrum, pytest.mark.slow]
MG_B1 = 5172.684  # Å air
WINDOW = {"wavelength_min": 5166.0, "wavelength_max": 5178.0, "step": 0.01}


@pytest.fixture(scope="module")
def spectra():
    turbospectrum_or_skip()
    atmospheres_or_skip()
    solar = synthesize(5750.0, 4.5, 0.0, 0.0, 1.0, **WINDOW)
    poor = synthesize(5750.0, 4.5, -1.0, 0.0, 1.0, **WINDOW)
    return solar, poor


def test_physical_flux(spectra):
    solar, _ = spectra
    assert solar.wavelength.size == 1201
    np.testing.assert_allclose(np.diff(solar.wavelength), 0.01, atol=2e-3)
    assert solar.flux.max() <= 1.0 + 1e-3 and solar.flux.min() > 0.0
    assert np.all(solar.flux_absolute > 0)
    # continuum: positive, smooth, near the solar surface flux at 5170 Å (~1e7 erg/s/cm²/Å)
    assert 5e6 < np.median(solar.continuum) < 2e7
    assert np.ptp(solar.continuum) / np.median(solar.continuum) < 0.01
    np.testing.assert_allclose(solar.flux * solar.continuum, solar.flux_absolute, rtol=2e-3)


def test_mg_b_line_at_the_right_place(spectra):
    solar, _ = spectra
    near = np.abs(solar.wavelength - MG_B1) < 0.5
    core = solar.wavelength[near][np.argmin(solar.flux[near])]
    assert abs(core - MG_B1) < 0.03
    assert solar.flux[near].min() < 0.25  # strong, broad-winged line


def test_metal_poor_lines_are_weaker(spectra):
    solar, poor = spectra
    ew_solar = np.sum(1.0 - solar.flux) * 0.01
    ew_poor = np.sum(1.0 - poor.flux) * 0.01
    assert ew_poor < 0.7 * ew_solar
    assert poor.flux.min() > solar.flux.min()


def test_provenance(spectra):
    solar, _ = spectra
    p = solar.provenance
    assert p["atmosphere_id"].startswith("atlas9:ap00k2odfnew.dat") and p["atmosphere_on_node"]
    assert len(p["linelist_sha256"]) == 64 and p["linelist_lines_used"] > 100
    assert p["code_version"] == "1.0.2" and p["medium"] == "air"
    assert solar.labels == {"teff": 5750.0, "logg": 4.5, "feh": 0.0, "alpha": 0.0, "vmic": 1.0}


def test_spherical_marcs_giant_agrees_with_atlas9():
    turbospectrum_or_skip()
    atmospheres_or_skip()
    window = {"wavelength_min": 5170.0, "wavelength_max": 5176.0, "step": 0.01}
    marcs = synthesize(4500.0, 2.0, -0.5, 0.0, 1.5, atmosphere="marcs", **window)
    atlas9 = synthesize(4500.0, 2.0, -0.5, 0.0, 1.5, atmosphere="atlas9", **window)
    assert marcs.provenance["atmosphere_id"].startswith("marcs:s4500_g+2.0_")  # spherical node
    ratio = np.median(marcs.continuum) / np.median(atlas9.continuum)
    assert ratio == pytest.approx(1.0, abs=0.05)
    assert np.corrcoef(marcs.flux, atlas9.flux)[0, 1] > 0.95
