"""The model's own error as low-rank templates, marginalised analytically.

A model that offers ``predict_error_templates(labels) -> (..., K, n_pix)`` (grid interpolation
error, emulator error; see :class:`~photosphere.model.ForwardModel`) says its flux is off
by ``ε = Σ_k a_k T_k`` with independent ``a_k ~ N(0, 1)``. The templates go through the same
linear chain as the flux (rotation, LSF, Doppler shift, rebinning, × telluric) and are multiplied
by the continuum, so on the observed pixels of every segment the covariance of the data is

    C = N + B Bᵀ,   B = continuum ⊙ (chained templates)   (n_pix × K),

coherent over the whole spectrum, never an N × N matrix. The amplitudes ``a`` are shared by all
segments (orders, exposures): ε is one error of the rest-frame model spectrum.

They are solved for jointly with the profiled Chebyshev continuum of each segment, as one linear
least-squares problem with a unit Gaussian (ridge) prior on ``a`` only and a flat prior on the
continuum coefficients β. Its minimum is the marginal χ² (Woodbury)::

    min_β (d − Sβ)ᵀ C⁻¹ (d − Sβ) = |N^{-1/2} (d − Sβ̂ − B â)|² + |â|²

(S: the model times the Chebyshev basis), so the *profiled residual vector*
``[N^{-1/2} r; â]`` is what least squares minimises; its Gauss–Newton ``JᵀJ`` is the Fisher
matrix of the marginal likelihood (variable projection). With G the normal matrix of the joint
problem (prior included), ``log|C| + log|SᵀC⁻¹S| = log|N| + log|G|``, which completes the
log-likelihood marginalised over ``a`` and β. The continuum multiplying the templates is the
continuum profiled without them (templates are small corrections; it keeps the problem linear).

β is eliminated segment by segment (a ``(degree+1)²`` solve each), leaving one K × K system for
``a``: the cost grows linearly with the number of segments.

B can follow θ (recomputed at every evaluation, differentiable) or be *frozen* at a reference θ
(:func:`frozen_columns`); ``fit`` and ``sample`` freeze it at the solution (see :func:`profile`
for why), and then an evaluation costs the plain chain plus the small joint solve.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import FitError
from .chain import DTYPE, ObservationChain

CHOICES = ("auto", "none")


def use_templates(model, model_error: str, noise=None) -> bool:
    """Whether a fit marginalises the model's error templates: ``model_error="auto"`` and the
    model has ``predict_error_templates`` and ``noise`` is None (the templates are not combined
    with a correlated-noise kernel nor with ``noise="auto"``); ``"none"`` never."""
    if model_error not in CHOICES:
        raise FitError(f"model_error={model_error!r} is not understood; pass 'auto' (use the "
                       "model's error templates when it has them) or 'none'")
    return model_error == "auto" and noise is None and hasattr(model, "predict_error_templates")


@dataclass(frozen=True)
class Profiled:
    """The joint solution at a batch of parameters.

    residual: per segment ``(..., n_pix)`` data − S β̂ − B â (not weighted; only the usable
    pixels mean anything); amplitude: ``(..., K)`` â; log_det: ``(...,)`` log|G| summed
    over the continuum blocks and the template block.
    """

    residual: list[torch.Tensor]
    amplitude: torch.Tensor
    log_det: torch.Tensor


def columns(chain: ObservationChain, theta: torch.Tensor
            ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per segment, the model without continuum ``(..., n_pix)`` and the columns of B,
    ``continuum ⊙ chained templates`` ``(..., K, n_pix)``, at ``theta (..., P)``."""
    stellar, templates = chain.stellar_and_templates(theta)
    base = chain.continuum(stellar)
    return stellar, [c.unsqueeze(-2) * t for c, t in zip(base, templates, strict=True)]


def frozen_columns(chain: ObservationChain, theta) -> list[torch.Tensor]:
    """B per segment ``(K, n_pix)`` at one ``theta (P,)``, without autodiff: the model-error
    covariance held fixed while θ moves (see :func:`profile`)."""
    with torch.no_grad():
        return columns(chain, torch.as_tensor(theta, dtype=DTYPE))[1]


def profile(chain: ObservationChain, theta: torch.Tensor,
            frozen: list[torch.Tensor] | None = None) -> Profiled:
    """Profile continuum and template amplitudes jointly at ``theta (..., P)`` (see module).

    frozen: B per segment from :func:`frozen_columns` (the covariance of the model error at a
    reference θ, e.g. the best fit), or None to recompute B at every θ. The fit freezes it:
    the templates vanish at the grid's nodes, so a B that follows θ makes the likelihood
    depend on where θ sits in its cell (the χ² term pulls towards cell centres, the log-det
    term towards nodes), an artefact of the grid, not information about the star."""
    if frozen is None:
        stellar, bs = columns(chain, theta)
    else:
        stellar = chain.stellar(torch.as_tensor(theta, dtype=DTYPE))
        bs = frozen
    k = bs[0].shape[-2]
    batch = stellar[0].shape[:-1]
    gram = torch.eye(k, dtype=DTYPE).expand(*batch, k, k)        # I + Σ BᵀWB, then Schur
    rhs = torch.zeros(*batch, k, dtype=DTYPE)
    log_det = torch.zeros(batch, dtype=DTYPE)
    designs, blocks = [], []
    for seg, s, b in zip(chain.segments, stellar, bs, strict=True):
        wb = b * seg.ivar                                         # (..., K, n) columns of B
        # with a continuum the model is S β (β free); without, the model flux itself
        target = seg.flux if seg.continuum_basis is not None else seg.flux - s
        gram = gram + wb @ b.transpose(-1, -2)
        rhs = rhs + (wb @ target.unsqueeze(-1)).squeeze(-1)
        x = None
        if seg.continuum_basis is not None:
            x = s.unsqueeze(-2) * seg.continuum_basis.T                 # (..., p, n) columns of S
            wx = x * seg.ivar
            g_xx = wx @ x.transpose(-1, -2)
            scale = g_xx.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(1e-300)
            g_xx = g_xx + 1e-12 * scale[..., None, None] * torch.eye(x.shape[-2], dtype=DTYPE)
            g_xb = wx @ b.transpose(-1, -2)                       # (..., p, K)
            solved = torch.linalg.solve(g_xx, torch.cat([g_xb, (wx @ seg.flux)[..., None]], -1))
            gram = gram - g_xb.transpose(-1, -2) @ solved[..., :k]
            rhs = rhs - (g_xb.transpose(-1, -2) @ solved[..., k:]).squeeze(-1)
            log_det = log_det + torch.linalg.slogdet(g_xx)[1]
            blocks.append(solved)
        else:
            blocks.append(None)
        designs.append((x, b, target))
    amplitude = torch.linalg.solve(gram, rhs.unsqueeze(-1)).squeeze(-1)     # (..., K)
    residual = []
    for (x, b, target), solved in zip(designs, blocks, strict=True):
        model = (amplitude.unsqueeze(-2) @ b).squeeze(-2)
        if x is not None:
            beta = solved[..., k] - (solved[..., :k] @ amplitude.unsqueeze(-1)).squeeze(-1)
            model = model + (beta.unsqueeze(-2) @ x).squeeze(-2)
        residual.append(target - model)
    log_det = log_det + torch.linalg.slogdet(gram)[1]
    return Profiled(residual=residual, amplitude=amplitude, log_det=log_det)
