"""Real synthesis through the grid machinery (skipped where Turbospectrum cannot be built)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from photosphere import cli
from photosphere.errors import DependencyError
from photosphere.grids.build import build_grid, default_synthesizer
from photosphere.grids.interpolate import GridInterpolator
from photosphere.grids.presets import GridSpec
from photosphere.grids.store import GridStore

pytestmark = [pytest.mark.slow, pytest.mark.turbospectrum]


@pytest.fixture(scope="module")
def synthesizer():
    try:
        return default_synthesizer()
    except DependencyError as exc:
        pytest.skip(f"Turbospectrum is not available here: {exc}")


def test_two_node_grid_around_mg_b(tmp_path, synthesizer):
    spec = GridSpec(name="mgb", axes={"teff": (5750.0, 6000.0)}, fixed={"logg": 4.5, "feh": 0.0},
                    wavelength_min=5182.0, wavelength_max=5186.0, velocity_step=1.0, n_chunks=1)
    report = build_grid(spec, tmp_path / "mgb.h5", scheduler="synchronous", progress=False)
    assert report.n_computed == 2 and report.n_missing == 0
    with GridStore.open(tmp_path / "mgb.h5") as store:
        info = store.info()
        flux = store.flux_all()
        assert info["provenance"]["linelist_sha256"]
        assert info["provenance"]["atmosphere_family"] == "atlas9"
        # Mg b 5183.60 Å: a deep line in both models, continuum near 1 away from it
        line = np.argmin(np.abs(store.wavelength - 5183.60))
        assert np.all(flux[:, line] < 0.5) and np.all(flux <= 1.0 + 1e-3)
        hotter = store.continuum(1) / store.continuum(0)
        assert np.all(hotter > 1.05)  # the 6000 K continuum is brighter
    model = GridInterpolator(tmp_path / "mgb.h5")
    mid = model.predict(torch.tensor([5875.0]))
    np.testing.assert_allclose(mid.numpy(), flux.mean(axis=0), atol=1e-6)


def test_grid_synth_command_writes_one_spectrum(tmp_path, synthesizer, capsys):
    out = tmp_path / "sun.fits"
    assert cli.main(["grid", "synth", "--teff", "5772", "--logg", "4.44", "--feh", "0",
                     "--wavelength-range", "5183", "5185", "-o", str(out), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["n_pixels"] > 150 and out.is_file()
