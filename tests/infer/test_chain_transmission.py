"""The chain's fitted-transmission stage (a telluric model multiplied before the LSF) and the
line fit's forward model through it: equal to the line fit's former composition, equal to the
composed-kernel route when T = 1, and differentiable in the line and telluric parameters."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from photosphere.errors import FitError
from photosphere.infer.chain import ObservationChain, is_transmission
from photosphere.infer.lines.fit import FitSettings, ObservedLineModel, line_chain
from photosphere.infer.optimize import rv_scan
from photosphere.models.lines.forward import LineForwardModel
from photosphere.models.lines.model import LineModel
from photosphere.models.lines.telluric import TelluricModel
from photosphere.ops.doppler import doppler_factor
from photosphere.ops.grid import log_uniform_wavelength
from photosphere.ops.lsf import gaussian_broaden
from photosphere.ops.resample import rebin
from photosphere.ops.rotation import rotational_broaden
from photosphere.spectrum import Spectrum

C_KMS = 299792.458
RV, VSINI = 12.3, 4.0
WAVE = np.linspace(6004, 6014, 1000)


def _lines(seed: int, n: int, lo: float, hi: float, scale: float = 1.0) -> LineModel:
    rng = np.random.default_rng(seed)
    return LineModel(np.sort(rng.uniform(lo, hi, n)), scale * rng.uniform(0.003, 0.03, n),
                     rng.uniform(0.02, 0.04, n), rng.uniform(0.005, 0.015, n),
                     pair_dtype=torch.float64)


def _telluric() -> TelluricModel:
    tell = TelluricModel({"H2O": _lines(2, 6, 6004, 6014)})
    with torch.no_grad():
        tell.rv.fill_(-7.0)
    return tell


def _template(wave: np.ndarray = WAVE) -> Spectrum:
    return Spectrum(wave, np.ones_like(wave), np.full_like(wave, 0.01))


def _former_route(star: LineModel, tell: TelluricModel, settings: FitSettings,
                  step: float) -> np.ndarray:
    """The line fit's composition before it used the chain (until 2026-12-07): the lines at
    λ / D(rv) on a fine observed-frame grid, rotation, × T(λ), LSF, rebin; (n_pix,)."""
    margin = 1 + (abs(RV) + 50 + 5 * VSINI) / C_KMS
    fine = torch.as_tensor(log_uniform_wavelength(WAVE[0] / margin, WAVE[-1] * margin, step))
    rv = torch.tensor(RV, dtype=torch.float64)
    flux = torch.exp(-star.opacity(fine / doppler_factor(rv)))
    flux = rotational_broaden(flux, torch.tensor(VSINI, dtype=torch.float64), step,
                              settings.epsilon) * tell(fine)
    return rebin(fine, gaussian_broaden(flux, settings.resolution, step),
                 torch.as_tensor(WAVE)).numpy()


def test_telluric_before_the_lsf_equals_the_former_composition():
    """Same velocity step (0.25 km/s): the chain (rest-frame grid, T at λ·D(rv), Doppler shift
    by the rebin edges) and the former observed-frame composition differ by 5.2e-5 at most in
    normalised flux (measured; lines up to 32 % deep): asserted below 2e-4."""
    star, tell = _lines(1, 30, 6002, 6016, 2.0), _telluric()
    settings = FitSettings(resolution=60000)
    model = ObservedLineModel(star, _template(), settings, tell, rv=RV)
    with torch.no_grad():
        model.log_vsini.fill_(math.log(VSINI))
        chain = model.normalised().numpy()
        former = _former_route(star, tell, settings, model.velocity_step)
        assert 1 - former.min() > 0.3 and 1 - tell(torch.as_tensor(WAVE)).min() > 0.01
    assert np.abs(chain - former).max() < 2e-4


class _Unit(torch.nn.Module):
    """T(λ) = 1: the transmission route must then equal the composed-kernel route."""

    def forward(self, wavelength: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(wavelength)


@pytest.mark.parametrize("macroturbulence", [None, 3.0])
def test_a_unit_transmission_equals_the_one_composed_kernel(macroturbulence):
    """Rotation (⊗ macroturbulence), × 1, LSF as two convolutions = one composed kernel, away
    from the slice ends: batched predictions and the RV scan agree to 1e-10."""
    star = _lines(1, 30, 6002, 6016, 2.0)
    model = LineForwardModel(star, velocity_step=0.5, wavelength_range=(5990.0, 6030.0))
    spectrum = _template()
    chains = [ObservationChain(model, spectrum, resolution=60000, telluric=t,
                               rv_bounds=(-40.0, 40.0), vsini_bounds=(0.0, 20.0),
                               macroturbulence=macroturbulence) for t in (None, _Unit())]
    assert chains[0].transmission is None and is_transmission(chains[1].transmission)
    theta = torch.tensor([[1.0, VSINI, RV], [0.8, 7.0, -3.0]], dtype=torch.float64)
    with torch.no_grad():
        composed, split = (c.predict(theta)[0][0] for c in chains)
    np.testing.assert_allclose(split.numpy(), composed.numpy(), rtol=0, atol=1e-10)
    trials = np.linspace(-20.0, 30.0, 11)
    scans = [rv_scan(c, np.array([1.0, VSINI]), trials) for c in chains]
    np.testing.assert_allclose(scans[1], scans[0], rtol=1e-10)


def test_gradients_reach_the_line_and_telluric_parameters():
    """χ² through the chain is differentiable in every line's parameters and the telluric
    scale and RV; the autograd gradient of one line's ln A and of ln s_H2O equals a central
    difference to 1e-5 relative."""
    star, tell = _lines(1, 30, 6002, 6016, 2.0), _telluric()
    settings = FitSettings(resolution=60000)
    with torch.no_grad():
        truth = ObservedLineModel(star, _template(), settings, tell, rv=RV).normalised()
    with torch.no_grad():
        star.log_amplitude.add_(0.1)
        tell.log_scale.fill_(0.2)
    observed = Spectrum(WAVE, truth.numpy() * 1.1, np.full(WAVE.size, 0.01))
    model = ObservedLineModel(star, observed, settings, tell, rv=RV)
    model.chi2().backward()
    k = int(np.argmin(np.abs(star.reference_centre.numpy() - 6009.0)))
    for name, p in (("ln A", star.log_amplitude), ("centre", star.centre_shift),
                    ("ln σ", star.log_sigma), ("telluric rv", tell.rv)):
        assert p.grad is not None and torch.any(p.grad != 0), name

    def central(param: torch.Tensor, index: int | None, h: float = 1e-5) -> float:
        values = []
        with torch.no_grad():
            for sign in (1, -1):
                view = param if index is None else param[index]
                view.add_(sign * h)
                values.append(float(model.chi2()))
                view.sub_(sign * h)
        return (values[0] - values[1]) / (2 * h)

    assert float(star.log_amplitude.grad[k]) == pytest.approx(
        central(star.log_amplitude, k), rel=1e-5)
    assert float(tell.log_scale.grad[0]) == pytest.approx(central(tell.log_scale, 0), rel=1e-5)


def test_a_learned_line_forward_model_follows_its_lines_and_a_frozen_one_does_not():
    star = _lines(1, 10, 6002, 6016)
    learned, frozen = (LineForwardModel(star, learned=flag) for flag in (True, False))
    label = torch.tensor([1.0], dtype=torch.float64)
    before = frozen.predict(label)
    with torch.no_grad():
        star.log_amplitude.add_(0.5)
    assert torch.equal(frozen.predict(label), before)
    assert float((learned.predict(label).detach() - before).min()) < -1e-3  # deeper lines
    learned.predict(label).sum().backward()
    assert torch.all(star.log_amplitude.grad < 0)


def test_fit_settings_map_onto_the_observation_settings_in_one_place():
    settings = FitSettings(resolution=44000, epsilon=0.5, continuum_degree=5)
    chain_settings = settings.observation(rv_bounds=(-60.0, 40.0), vsini_max=20.0,
                                          telluric=_telluric())
    assert (chain_settings.resolution, chain_settings.epsilon,
            chain_settings.continuum_degree) == (44000, 0.5, 5)
    assert chain_settings.rv_bounds == (-60.0, 40.0) and chain_settings.vsini_bounds == (0, 20)
    assert is_transmission(chain_settings.telluric)
    assert settings.observation(rv_bounds=(-1.0, 1.0), vsini_max=5.0,
                                continuum_degree=1).continuum_degree == 1
    chain = line_chain(_lines(1, 10, 6002, 6016), _template(), chain_settings,
                       velocity_step=settings.velocity_step(WAVE), learned=True)
    assert chain.n_pixels == WAVE.size  # the grid covers every pixel over the RV range
    assert chain.epsilon == 0.5 and chain.continuum_degree == 5


def test_error_templates_through_a_fitted_transmission_are_refused():
    model = LineForwardModel(_lines(1, 10, 6002, 6016), wavelength_range=(5990.0, 6030.0))
    chain = ObservationChain(model, _template(), resolution=60000, telluric=_telluric(),
                             rv_bounds=(-40.0, 40.0), vsini_bounds=(0.0, 20.0))
    with pytest.raises(FitError, match="fitted transmission"):
        chain.stellar_and_templates(torch.tensor([1.0, VSINI, RV], dtype=torch.float64))
