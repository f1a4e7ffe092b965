"""The line clone's least-squares problem: the sparse line Jacobian, for Levenberg–Marquardt.

Every (line, pixel) pair of the sparse model depends on the four parameters of one line only
(centre shift, ln A, ln σ, ln γ), so the Jacobian of the flux ``F = exp(−τ)`` has exactly
4 × n_pairs non-zeros: ``∂F_p/∂θ_ik = −F_p ∂τ_ip/∂θ_ik``. The per-pair derivatives of the
shared-FWHM pseudo-Voigt are analytic (:func:`pseudo_voigt_pairs`), the Jacobian is assembled
column by column in CSC form without sorting, and each step solves the damped normal equations
``(JᵀWJ + λ D) δ = −JᵀW r`` (``D`` = diag(JᵀWJ), Marquardt's scaling) by conjugate gradients
with each line's 4 × 4 block as preconditioner. JᵀWJ is block-banded (only lines whose windows
overlap couple), so a step costs about n_lines × (overlapping lines)² — a few tenths of a
second for 10⁴ lines.

The iteration itself is the project's one Levenberg–Marquardt loop,
:func:`photosphere.ops.levenberg_marquardt.minimise`, with this module's :class:`LineProblem`
(λ × 10 after a rejected step, ÷ 10 after an accepted one, an iteration = one accepted step).
Converged means an accepted step lowered the loss by less than ``tolerance`` (relative), or no
step of any damping lowers it. Measured on the UVES Sun this reaches in ~10–20 iterations the
loss that Adam needs hundreds of epochs for (docs/lines.md).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from ...errors import ModelError
from ...ops.levenberg_marquardt import (
    Damping,
    block_jacobi_cg_step,
    diagonal_blocks,
    minimise,
    object_rows,
)
from .model import LineModel, line_windows
from .profiles import FWHM_PER_SIGMA, pseudo_voigt_coefficients

_LN2 = math.log(2.0)
_K_GAUSS = math.sqrt(_LN2 / math.pi)
# Thompson, Cox & Hastings (1987) shared FWHM: f⁵ = Σ_k c_k f_G^(5−k) f_L^k
_FWHM_COEFFS = (1.0, 2.69269, 2.42843, 4.47163, 0.07842, 1.0)
_ETA_COEFFS = (1.36603, -0.47719, 0.11116)
_PARAMETERS = ("centre_shift", "log_amplitude", "log_sigma", "log_gamma")
# λ × 10 after a rejected step, ÷ 10 after an accepted one (measured, docs/lines.md)
DAMPING = Damping(initial=1e-2, up=10.0, down=10.0, floor=1e-7, ceiling=1e10,
                  count_rejected=False)
MAX_CENTRAL_DEPTH = 20.0  # optical depth: a central flux of 2e-9
CG_TOLERANCE = 1e-2
CG_ITERATIONS = 50


def pseudo_voigt_pairs(wavelength: torch.Tensor, reference_centre: torch.Tensor,
                       line_id: torch.Tensor, pixel: torch.Tensor, theta: torch.Tensor, *,
                       derivatives: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Optical depth of every (line, pixel) pair and its derivatives w.r.t. the line's parameters.

    wavelength: (n_pix,) Å; reference_centre: (n_lines,) Å; line_id, pixel: (n_pairs,) from
    :func:`.model.line_windows`; theta: (n_lines, 4) = centre shift (Å), ln A, ln σ, ln γ
    (A in Å, σ and γ in Å). Returns τ_pairs (n_pairs,) and, with ``derivatives``,
    ∂τ_pair/∂θ (n_pairs, 4), analytic for the shared-FWHM pseudo-Voigt of
    :func:`.profiles.pseudo_voigt` (checked against autograd in the tests).
    """
    shift, log_a, log_s, log_g = theta.unbind(1)
    f_g = FWHM_PER_SIGMA * torch.exp(log_s)
    f_l = 2.0 * torch.exp(log_g)
    c = _FWHM_COEFFS
    f5 = sum(c[k] * f_g ** (5 - k) * f_l**k for k in range(6))
    fwhm = f5**0.2
    ratio = f_l / fwhm
    e1, e2, e3 = _ETA_COEFFS
    eta = ratio * (e1 + ratio * (e2 + ratio * e3))
    inv_h = 2.0 / fwhm
    prefactor = torch.exp(log_a) * inv_h
    u = (wavelength[pixel] - (reference_centre + shift)[line_id]) * inv_h[line_id]
    lorentz = 1.0 / (1.0 + u * u)
    gauss = torch.exp(-_LN2 * u * u)
    eta_p = eta[line_id]
    shape = eta_p / math.pi * lorentz + (1.0 - eta_p) * _K_GAUSS * gauss
    pre_p = prefactor[line_id]
    tau = pre_p * shape
    if not derivatives:
        return tau, None
    # d ln f / d ln σ and d ln f / d ln γ through the shared FWHM
    df5_dg = sum((5 - k) * c[k] * f_g ** (4 - k) * f_l**k for k in range(5))
    df5_dl = sum(k * c[k] * f_g ** (5 - k) * f_l ** (k - 1) for k in range(1, 6))
    s_sigma = f_g * df5_dg / (5.0 * f5)
    s_gamma = f_l * df5_dl / (5.0 * f5)
    deta = e1 + ratio * (2.0 * e2 + ratio * 3.0 * e3)
    eta_sigma = deta * (-ratio * s_sigma)
    eta_gamma = deta * ratio * (1.0 - s_gamma)
    d_shape_du = (eta_p / math.pi * (-2.0 * u * lorentz * lorentz)
                  + (1.0 - eta_p) * _K_GAUSS * (-2.0 * _LN2 * u * gauss))
    d_shape_deta = lorentz / math.pi - _K_GAUSS * gauss
    width_core = shape + u * d_shape_du  # from ∂(inv_h · shape(u))/∂ ln f = −(P + u P_u) inv_h
    d = torch.stack([
        -pre_p * inv_h[line_id] * d_shape_du,
        tau,
        pre_p * (-s_sigma[line_id] * width_core + d_shape_deta * eta_sigma[line_id]),
        pre_p * (-s_gamma[line_id] * width_core + d_shape_deta * eta_gamma[line_id]),
    ], 1)
    return tau, d


@dataclass(frozen=True)
class LineProblem:
    """One clone fit as a :func:`~photosphere.ops.levenberg_marquardt.minimise` problem.

    x (B, 4 n_lines) flattens θ (n_lines, 4) = centre shift (Å), ln A, ln σ, ln γ row by row
    (column 4 i + k). Fixed parts: pixels, target, weights, windows, the projection's limits
    and the CSC layout of the Jacobian's line cores (the pairs within ``core_fwhm`` FWHM of
    the line, used for JᵀWJ; the gradient is exact over all pairs). The loss is
    ½ Σ weight (exp(−τ) − target)².
    """

    wavelength: torch.Tensor
    target: torch.Tensor
    weight: torch.Tensor
    reference_centre: torch.Tensor
    half_window: torch.Tensor
    log_sigma_min: torch.Tensor  # (n_lines,) ln of half a pixel at each line
    line_id: torch.Tensor
    pixel: torch.Tensor
    core: torch.Tensor  # (n_core,) indices of the pairs kept in the approximate JᵀWJ
    position: np.ndarray  # (4 n_core,) slot of each core derivative in the CSC data array
    rows: np.ndarray
    indptr: np.ndarray

    @classmethod
    def build(cls, model: LineModel, wavelength: torch.Tensor, target: torch.Tensor,
              weight: torch.Tensor, core_fwhm: float) -> LineProblem:
        line_id, pixel = line_windows(wavelength, model.reference_centre, model.half_window)
        with torch.no_grad():
            fwhm = FWHM_PER_SIGMA * model.sigma + 2.0 * model.gamma
            step = float(torch.median(torch.diff(wavelength)))
            core_half = torch.clamp(core_fwhm * fwhm, min=3.0 * step)
            offset = (wavelength[pixel] - model.reference_centre[line_id]).abs()
        core = torch.nonzero(offset <= core_half[line_id]).squeeze(1)
        lid = line_id[core].numpy()
        counts = np.bincount(lid, minlength=model.n_lines)
        first = np.cumsum(counts) - counts
        within = np.arange(lid.size) - first[lid]
        position = (4 * first[lid])[:, None] + np.arange(4)[None, :] * counts[lid][:, None] \
            + within[:, None]
        rows = np.empty(4 * lid.size, dtype=np.int64)
        rows[position.ravel()] = np.repeat(pixel[core].numpy(), 4)
        indptr = np.concatenate([[0], np.cumsum(np.repeat(counts, 4))])
        pixel_step = torch.diff(wavelength)
        at = torch.clamp(torch.searchsorted(wavelength, model.reference_centre), 1,
                         wavelength.numel() - 1) - 1
        return cls(wavelength, target, weight, model.reference_centre, model.half_window,
                   torch.log(0.5 * pixel_step[at]), line_id, pixel, core, position.ravel(),
                   rows, indptr)

    # ------------------------------------------------------------ the minimise() protocol
    def loss(self, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return np.array([self._loss(self.flux(self._theta(row), derivatives=False)[0])
                         for row in x])

    def linearise(self, x: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray]:
        """Per row (packed by :func:`~photosphere.ops.levenberg_marquardt.object_rows`): the
        normal matrix JᵀWJ over the line cores (CSR), its 4 × 4 diagonal blocks, its diagonal
        (floored at 10⁻⁹ of the largest) and the exact gradient."""
        systems = []
        for row in x:
            flux, d = self.flux(self._theta(row))
            jac = self.jacobian(flux, d)
            normal = (jac.T.tocsr() @ jac).tocsr()
            diag = normal.diagonal()
            diag = np.maximum(diag, 1e-9 * max(float(diag.max()), 1e-300))
            systems.append((normal, diagonal_blocks(normal, 4), diag, self.gradient(flux, d)))
        return object_rows(systems)

    def step(self, system: tuple[np.ndarray], lam: np.ndarray, x: np.ndarray) -> np.ndarray:
        return np.stack([block_jacobi_cg_step(normal, blocks, diag, lam_b, -gradient,
                                              tolerance=CG_TOLERANCE, max_iter=CG_ITERATIONS)
                         for (normal, blocks, diag, gradient), lam_b
                         in zip(system[0], lam, strict=True)])

    def project(self, x: np.ndarray) -> np.ndarray:
        return np.stack([_project(self._theta(row), self.half_window, self.log_sigma_min)
                         .cpu().numpy().ravel() for row in x])

    # ------------------------------------------------------------ the model's numbers
    def _theta(self, row: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(row.reshape(-1, 4), dtype=torch.float64,
                               device=self.wavelength.device)

    def flux(self, theta: torch.Tensor, derivatives: bool = True):
        tau_pairs, d = pseudo_voigt_pairs(self.wavelength, self.reference_centre, self.line_id,
                                          self.pixel, theta, derivatives=derivatives)
        tau = torch.zeros_like(self.wavelength).index_add(0, self.pixel, tau_pairs)
        return torch.exp(-tau), d

    def _loss(self, flux: torch.Tensor) -> float:
        return float(0.5 * torch.sum(self.weight * (flux - self.target) ** 2))

    def gradient(self, flux: torch.Tensor, d: torch.Tensor) -> np.ndarray:
        """Exact ∂loss/∂θ over all pairs, flattened as (4 n_lines,) in column order 4 i + k."""
        n_lines = self.indptr.size // 4
        per_pixel = -(self.weight * (flux - self.target) * flux)[self.pixel]
        g = torch.zeros(n_lines, 4, dtype=d.dtype, device=d.device)
        return g.index_add(0, self.line_id, d * per_pixel[:, None]).cpu().numpy().ravel()

    def jacobian(self, flux: torch.Tensor, d: torch.Tensor) -> sp.csc_matrix:
        """(n_pix, 4 n_lines) Jacobian of the √weight-scaled flux over the line cores, CSC,
        built without sorting."""
        scale = -(flux * torch.sqrt(self.weight))[self.pixel[self.core]]
        data = np.empty(self.rows.size)
        data[self.position] = (d[self.core] * scale[:, None]).cpu().numpy().ravel()
        n_cols = self.indptr.size - 1
        return sp.csc_matrix((data, self.rows, self.indptr),
                             shape=(self.wavelength.numel(), n_cols))


def _project(theta: torch.Tensor, half_window: torch.Tensor, log_sigma_min: torch.Tensor
             ) -> torch.Tensor:
    """Keep each line physical and inside its window: |shift| ≤ half window / 2, half a pixel
    ≤ σ ≤ half window (a narrower line would fit single pixels), 10⁻⁶ Å ≤ γ ≤ half window,
    10⁻¹² Å ≤ A and a central optical depth ≤ ``MAX_CENTRAL_DEPTH`` (a line saturated to zero
    flux has a zero Jacobian and could never come back). theta: (n_lines, 4); half_window,
    log_sigma_min: (n_lines,)."""
    theta = theta.clone()
    lim = 0.5 * half_window
    theta[:, 0] = torch.maximum(torch.minimum(theta[:, 0], lim), -lim)
    top = torch.log(half_window)
    theta[:, 2] = torch.minimum(torch.maximum(theta[:, 2], log_sigma_min), top)
    theta[:, 3] = torch.minimum(torch.clamp(theta[:, 3], min=math.log(1e-6)), top)
    _, c_lorentz, c_gauss = pseudo_voigt_coefficients(torch.exp(theta[:, 2]),
                                                       torch.exp(theta[:, 3]))
    log_a_max = math.log(MAX_CENTRAL_DEPTH) - torch.log(c_lorentz + c_gauss)
    theta[:, 1] = torch.minimum(torch.clamp(theta[:, 1], min=math.log(1e-12)), log_a_max)
    return theta


def refine_lines(model: LineModel, wavelength, target, *, weight=None,
                 max_iterations: int = 50, tolerance: float = 1e-3,
                 damping: float = 1e-2, core_fwhm: float = 8.0, progress: bool = True,
                 description: str = "LM") -> list[float]:
    """Fit ``model``'s line parameters to ``target`` by Levenberg–Marquardt; in place.

    wavelength, target: (n_pix,) Å and normalised flux; weight: (n_pix,) inverse variance
    (default 1). The loss is ½ Σ weight (exp(−τ) − target)². Stops when an accepted step lowers
    the loss by less than ``tolerance`` relative to it, when no damping up to 10¹⁰ finds a lower
    loss, or after ``max_iterations`` accepted steps. Returns the loss after each iteration
    (starting with the initial loss). Pseudo-Voigt models only (analytic Jacobian).
    """
    if model.profile != "pseudo_voigt":
        raise ModelError(f"the Levenberg–Marquardt optimiser needs profile='pseudo_voigt' (got "
                         f"{model.profile!r}); use optimizer='adam' for the exact Voigt")
    device = model.reference_centre.device
    wave = torch.as_tensor(wavelength, dtype=torch.float64, device=device)
    target = torch.as_tensor(target, dtype=torch.float64, device=device)
    weight = (torch.ones_like(target) if weight is None
              else torch.as_tensor(weight, dtype=torch.float64, device=device))
    problem = LineProblem.build(model, wave, target, weight, core_fwhm)
    with torch.no_grad():
        theta = torch.stack([getattr(model, n).detach() for n in _PARAMETERS], 1)
    outcome = minimise(problem, theta.cpu().numpy().ravel()[None], max_iter=max_iterations,
                       ftol=tolerance, xtol=0.0,
                       damping=dataclasses.replace(DAMPING, initial=damping),
                       progress=progress, description=description)
    with torch.no_grad():
        solution = problem._theta(outcome.u[0])
        for k, name in enumerate(_PARAMETERS):
            getattr(model, name).copy_(solution[:, k])
    return outcome.history[0]
