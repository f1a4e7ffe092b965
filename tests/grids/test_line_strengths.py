"""Empirical line strengths (grids.line_strengths): recovery on a toy star, files, errors."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from photosphere.errors import (
    FileFormatError,
    InvalidSpectrumError,
    MissingFileError,
    OutOfGridError,
)
from photosphere.grids.line_strengths import (
    CorrectedSource,
    LineStrengths,
    derive_line_strengths,
    plot_line_strengths,
)
from photosphere.grids.synth.validation_fit import Broadener
from photosphere.ops.grid import log_uniform_wavelength
from photosphere.spectrum import Spectrum

torch.set_num_threads(1)
CENTRES = np.arange(5102.0, 5158.0, 2.0)  # 28 unblended lines
REFERENCE = {"teff": 5800.0, "logg": 4.4, "feh": 0.0}


class ToyLines:
    """Gaussian optical-depth lines whose strengths scale with teff and feh."""

    label_names = ("teff", "logg", "feh")
    medium = "air"

    def __init__(self, strengths: np.ndarray | None = None):
        self.bounds = {"teff": (5000.0, 6500.0), "logg": (4.0, 5.0), "feh": (-1.0, 0.5)}
        self.wavelength = log_uniform_wavelength(5090.0, 5170.0, 1.0)
        rng = np.random.default_rng(1)
        self.tau0 = torch.as_tensor(rng.uniform(0.05, 1.5, CENTRES.size))
        self.scale = torch.ones(CENTRES.size) if strengths is None else torch.as_tensor(strengths)

    def predict(self, labels: torch.Tensor) -> torch.Tensor:
        labels = torch.as_tensor(labels, dtype=torch.float64)
        amp = (self.tau0 * self.scale * 10 ** labels[..., 2:3]
               * (5800.0 / labels[..., 0:1]) ** 2)  # (..., n_lines)
        wave = torch.as_tensor(self.wavelength)
        prof = torch.exp(-0.5 * ((wave - torch.as_tensor(CENTRES)[:, None]) / 0.04) ** 2)
        return torch.exp(-(amp.unsqueeze(-1) * prof).sum(-2))

    def predict_error_templates(self, labels: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.predict(labels) * 0 + 1e-3, 1 - self.predict(labels)], -2)


def _observed(source: ToyLines, rv: float = 0.4) -> Spectrum:
    flux = source.predict(torch.tensor([[5800.0, 4.4, 0.0]]))[0].numpy()
    wave_obs = np.arange(5095.0, 5165.0, 0.02)
    broaden = Broadener(SimpleNamespace(wavelength=source.wavelength, flux=flux), wave_obs, 0.5,
                        1.9)
    with torch.no_grad():
        obs = broaden(90_000.0, 3.0, rv)
    return Spectrum(wave_obs, obs, medium="air", flux_unit="normalized")


@pytest.fixture(scope="module")
def derived():
    truth = np.random.default_rng(2).uniform(0.3, 2.0, CENTRES.size)
    grid = ToyLines()
    strengths = derive_line_strengths(_observed(ToyLines(truth)), grid, REFERENCE, vsini=1.9,
                                      n_iter=10, progress=False)
    return grid, strengths, truth


def test_recovers_each_lines_strength_and_the_reference_spectrum(derived):
    grid, strengths, truth = derived
    ref = strengths.reference
    assert ref["rms_after"] < 0.1 * ref["rms_before"]
    centre_px = np.searchsorted(grid.wavelength, CENTRES)
    c = strengths.exponent[centre_px]
    np.testing.assert_allclose(c, truth, rtol=0.1)
    assert abs(ref["rv"] - 0.4) < 0.1
    # far from every line the spectrum is untouched
    assert np.all(strengths.exponent[grid.predict(torch.tensor([[5800.0, 4.4, 0.0]]))[0]
                                     .numpy() > 1 - 1e-6] == 1.0)


def test_corrected_source_carries_the_correction_to_other_labels(derived):
    grid, strengths, truth = derived
    corrected = CorrectedSource(grid, strengths)
    labels = torch.tensor([[6200.0, 4.6, -0.5]])
    expected = ToyLines(truth).predict(labels)[0].numpy()
    got = corrected.predict(labels)[0].numpy()
    centre_px = np.searchsorted(grid.wavelength, CENTRES)
    # weak-line pseudo optical depth scales with c, so line cores move to the truth
    assert np.max(np.abs(got[centre_px] - expected[centre_px])) < 0.02
    assert np.max(np.abs(grid.predict(labels)[0].numpy()[centre_px] - expected[centre_px])) > 0.1
    assert corrected.cache_token == strengths.digest
    assert corrected.label_names == grid.label_names and corrected.bounds == grid.bounds


def test_error_templates_follow_the_derivative_of_the_correction(derived):
    grid, strengths, _ = derived
    corrected = CorrectedSource(grid, strengths)
    labels = torch.tensor([[5600.0, 4.4, 0.1]])
    f = grid.predict(labels)
    t = grid.predict_error_templates(labels)
    eps = 1e-6
    numeric = (strengths.apply(f.unsqueeze(-2) + eps * t)
               - strengths.apply(f.unsqueeze(-2) - eps * t)) / (2 * eps)
    np.testing.assert_allclose(corrected.predict_error_templates(labels).numpy(),
                               numeric.numpy(), rtol=1e-5, atol=1e-8)
    assert not hasattr(CorrectedSource(SimpleNamespace(
        label_names=grid.label_names, bounds=grid.bounds, wavelength=grid.wavelength,
        medium="air", predict=grid.predict), strengths), "predict_error_templates")


def test_file_round_trip_and_plot(derived, tmp_path):
    _, strengths, _ = derived
    path = strengths.write(tmp_path / "ls.ecsv")
    back = LineStrengths.read(path)
    np.testing.assert_array_equal(back.exponent, strengths.exponent)
    assert back.digest == strengths.digest and back.reference["rv"] == strengths.reference["rv"]
    assert LineStrengths.from_dict(strengths.to_dict()).digest == strengths.digest
    png = plot_line_strengths(strengths, tmp_path / "ls.png", zoom=(5100, 5120))
    assert png.stat().st_size > 10_000
    with pytest.raises(InvalidSpectrumError, match="fresh"):
        plot_line_strengths(back, tmp_path / "x.png")


def test_bad_inputs_give_typed_errors(derived, tmp_path):
    grid, strengths, _ = derived
    with pytest.raises(MissingFileError, match="calibrate-lines"):
        LineStrengths.read(tmp_path / "none.ecsv")
    (tmp_path / "junk.ecsv").write_text("not a table\x00\x01")
    with pytest.raises(FileFormatError):
        LineStrengths.read(tmp_path / "junk.ecsv")
    from astropy.table import Table

    Table({"a": [1.0]}).write(tmp_path / "other.ecsv", format="ascii.ecsv")
    with pytest.raises(FileFormatError, match="not a line-strength table"):
        LineStrengths.read(tmp_path / "other.ecsv")
    with pytest.raises(InvalidSpectrumError, match="pixels"):
        strengths.apply(torch.ones(10))
    with pytest.raises(InvalidSpectrumError, match=">= 0"):
        LineStrengths(np.arange(3.0), np.array([1.0, -1.0, 1.0]))
    short = LineStrengths(grid.wavelength[:-1], strengths.exponent[:-1])
    with pytest.raises(InvalidSpectrumError, match="another wavelength axis"):
        CorrectedSource(grid, short)
    with pytest.raises(OutOfGridError, match="teff"):
        derive_line_strengths(_observed(grid), grid, {**REFERENCE, "teff": 9000.0},
                              progress=False)
    vacuum = Spectrum(np.arange(5095.0, 5165.0, 0.02), np.ones(3500), medium="vacuum")
    with pytest.raises(InvalidSpectrumError, match="vacuum"):
        derive_line_strengths(vacuum, grid, REFERENCE, progress=False)
    far = Spectrum(np.arange(6000.0, 6010.0, 0.02), np.ones(500), medium="air")
    with pytest.raises(InvalidSpectrumError, match="overlaps"):
        derive_line_strengths(far, grid, REFERENCE, progress=False)
