"""Likelihood of an observation given chain parameters.

* Independent Gaussian noise: ``σ_eff² = σ² + σ_model²`` where ``σ_model²`` is the model's own
  variance (``predict_variance``, e.g. an emulator's interpolation error) when it has one.
* Model error as low-rank templates (``model_error="auto"`` and a model with
  ``predict_error_templates``): ``C = N + B Bᵀ`` marginalised analytically
  (:mod:`photosphere.infer.model_error`), with B recomputed at every θ or frozen at
  ``templates_at`` (what fit and sample do); the diagonal ``predict_variance`` is then not
  added (it would count the same error twice).
* Correlated noise (optional): a global covariance kernel as in Starfish (Czekala et al. 2015,
  §2.3): a Matérn-3/2 kernel in velocity space, ``k(Δv) = a² (1 + √3 Δv/ℓ) exp(-√3 Δv/ℓ)``, added
  to the diagonal. We multiply it by a compactly supported Wendland taper (positive definite, so
  the product stays a covariance; Starfish uses a Hann window), which makes the matrix *banded*:
  the Cholesky factor, solves and log-determinant cost O(N b²) with ``scipy.linalg.cholesky_banded``
  (b = pixels within the taper radius), never a dense N² factorisation.

The continuum coefficients are profiled out by the chain; :meth:`Likelihood.log_likelihood`
adds ``-½ log det(AᵀWA)`` per segment, which turns the profile into the likelihood marginalised
over the coefficients under a flat prior (A: the model times the Chebyshev basis).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.linalg import cholesky_banded, solve_banded

from ..errors import FitError
from . import model_error as model_error_
from .chain import C_KMS, DTYPE, ObservationChain


def matern32(dv: np.ndarray, amplitude: float, length_scale: float) -> np.ndarray:
    """Matérn-3/2 covariance at velocity separations ``dv`` (km/s); ``amplitude`` in flux units,
    ``length_scale`` ℓ in km/s."""
    x = math.sqrt(3.0) * np.abs(dv) / length_scale
    return amplitude ** 2 * (1.0 + x) * np.exp(-x)


def wendland_taper(dv: np.ndarray, radius: float) -> np.ndarray:
    """Wendland ψ₃,₁ taper ``(1 - r)⁴₊ (4r + 1)``, ``r = |dv| / radius`` (positive definite in
    1D-3D)."""
    r = np.abs(dv) / radius
    return np.where(r < 1.0, (1.0 - r) ** 4 * (4.0 * r + 1.0), 0.0)


@dataclass(frozen=True)
class CorrelatedNoise:
    """Global correlated-noise kernel: Matérn-3/2 of ``amplitude`` (flux units, same as the data)
    and ``length_scale`` (km/s), tapered to zero beyond ``taper * length_scale``."""

    amplitude: float
    length_scale: float
    taper: float = 6.0

    def __post_init__(self) -> None:
        if not (self.amplitude >= 0 and self.length_scale > 0 and self.taper > 0):
            raise FitError(f"CorrelatedNoise needs amplitude >= 0, length_scale > 0 and taper > 0; "
                           f"got {self.amplitude}, {self.length_scale}, {self.taper}")

    @property
    def radius(self) -> float:
        """Velocity (km/s) beyond which pixels are uncorrelated."""
        return self.taper * self.length_scale

    def kernel(self, dv: np.ndarray) -> np.ndarray:
        return matern32(dv, self.amplitude, self.length_scale) * wendland_taper(dv, self.radius)

    def banded(self, wavelength: np.ndarray, variance: np.ndarray) -> np.ndarray:
        """Lower banded form ``(b+1, n)`` of ``K = diag(variance) + kernel`` for pixels at
        ``wavelength`` (Å, increasing): ``ab[k, j] = K[j+k, j]``."""
        logw = np.log(np.asarray(wavelength, float))
        n = len(logw)
        rows = [np.asarray(variance, float) + self.amplitude ** 2]
        k = 1
        while k < n:
            dv = C_KMS * (logw[k:] - logw[:-k])
            if np.all(dv >= self.radius):
                break
            rows.append(np.concatenate([self.kernel(dv), np.zeros(k)]))
            k += 1
        return np.stack(rows)

    def dense(self, wavelength: np.ndarray, variance: np.ndarray) -> np.ndarray:
        """The same covariance as a dense ``(n, n)`` matrix (reference for tests; O(N²))."""
        logw = np.log(np.asarray(wavelength, float))
        dv = C_KMS * (logw[:, None] - logw[None, :])
        return np.diag(np.asarray(variance, float)) + self.kernel(dv)

    @classmethod
    def from_residuals(cls, wavelength: list[np.ndarray], residual: list[np.ndarray],
                       sigma: list[np.ndarray], max_lag: int = 60,
                       taper: float = 6.0) -> CorrelatedNoise | None:
        """Estimate the kernel from best-fit residuals: fit ``a² ρ(Δv; ℓ)`` to their empirical
        autocovariance at lags 1..max_lag pixels (lag 0 holds the white noise). Returns None when
        the residuals show no positive correlation. Arrays per segment, good pixels only."""
        lags = np.arange(1, max_lag + 1)
        acov = np.zeros(max_lag)
        counts = np.zeros(max_lag)
        steps = []
        for w, r in zip(wavelength, residual, strict=True):
            if len(r) <= max_lag + 1:
                continue
            steps.append(np.median(np.diff(np.log(w))) * C_KMS)
            for i, k in enumerate(lags):
                acov[i] += float(np.sum(r[k:] * r[:-k]))
                counts[i] += len(r) - k
        if not steps or not np.all(counts > 0):
            return None
        acov /= counts
        dv = lags * float(np.median(steps))
        best = None
        for ell in np.geomspace(max(dv[0] / 3, 1e-3), dv[-1] * 2, 60):
            shape = matern32(dv, 1.0, ell) * wendland_taper(dv, taper * ell)
            a2 = float(shape @ acov / (shape @ shape))
            if a2 <= 0:
                continue
            loss = float(np.sum((acov - a2 * shape) ** 2))
            if best is None or loss < best[0]:
                best = (loss, a2, ell)
        if best is None:
            return None
        return cls(amplitude=math.sqrt(best[1]), length_scale=float(best[2]), taper=taper)


class Likelihood:
    """Gaussian likelihood of ``chain``'s data, with optional model variance and correlated noise.

    residuals(theta): ``(..., N)`` torch residuals over the N usable pixels, divided by σ_eff
    (independent noise) or raw (correlated noise; :meth:`whiten` finishes the job) — what the
    least-squares solver differentiates.
    log_likelihood(theta): ``(...,)`` float64 numpy log-likelihood (continuum marginalised).
    """

    def __init__(self, chain: ObservationChain, noise: CorrelatedNoise | None = None,
                 model_variance: bool = True, model_error: str = "none",
                 templates_at=None) -> None:
        self.chain = chain
        self.noise = noise
        self.use_templates = model_error_.use_templates(chain.model, model_error, noise)
        self.templates_at = None if templates_at is None or not self.use_templates else \
            np.asarray(templates_at, float)
        self._frozen = None if self.templates_at is None else \
            model_error_.frozen_columns(chain, self.templates_at)
        self.use_model_variance = (bool(model_variance) and not self.use_templates
                                   and hasattr(chain.model, "predict_variance"))
        self._n_templates: int | None = None if self._frozen is None else \
            int(self._frozen[0].shape[-2])
        self._good = [s.ivar > 0 for s in chain.segments]
        # the usable pixels as indices: index_select is several times faster than a boolean
        # mask on every evaluation
        self._index = [torch.nonzero(g).squeeze(-1) for g in self._good]
        self._sd: list[torch.Tensor] | None = None  # σ of the usable pixels (data only)
        self._variance = [torch.where(g, 1.0 / torch.where(g, s.ivar, 1.0), 0.0)
                          for s, g in zip(chain.segments, self._good, strict=True)]
        self._chol_cache: dict[int, list[np.ndarray]] = {}
        self._data_log_det = float(sum(torch.log(v[g]).sum() for v, g in
                                       zip(self._variance, self._good, strict=True)))

    @property
    def n_pixels(self) -> int:
        return self.chain.n_pixels

    @property
    def n_residuals(self) -> int:
        """Length of :meth:`residuals`: the usable pixels, plus one entry per error template
        (the profiled amplitudes) when templates are used."""
        if not self.use_templates:
            return self.n_pixels
        if self._n_templates is None:
            centre = torch.tensor([[0.5 * sum(self.chain.model.bounds[n]) for n in
                                    self.chain.label_names]], dtype=DTYPE)
            with torch.no_grad():
                self._n_templates = int(self.chain.model.predict_error_templates(centre)
                                        .shape[-2])
        return self.n_pixels + self._n_templates

    # ---------------------------------------------------------------- pieces
    def _variances(self, theta: torch.Tensor, cont: list[torch.Tensor]) -> list[torch.Tensor]:
        var = [v.expand_as(c) for v, c in zip(self._variance, cont, strict=True)]
        if self.use_model_variance:
            mv = self.chain.model_variance(theta, cont)
            var = [v + m for v, m in zip(var, mv, strict=True)]
        return var

    def residuals(self, theta: torch.Tensor) -> torch.Tensor:
        """Residuals on the usable pixels, concatenated over segments: ``(..., N)``; with error
        templates, the profiled residual vector ``[N^{-1/2} r; â]`` ``(..., N + K)``."""
        theta = torch.as_tensor(theta, dtype=DTYPE)
        if self.use_templates:
            return self._profiled_vector(model_error_.profile(self.chain, theta, self._frozen))
        model, cont = self.chain.predict(theta)
        sd = None
        if self.noise is None and not self.use_model_variance:
            if self._sd is None:   # the data's σ: the same at every evaluation
                self._sd = [torch.sqrt(v[g]) for v, g in zip(self._variance, self._index,
                                                              strict=True)]
            sd = self._sd
        elif self.noise is None:
            var = self._variances(theta, cont)
            sd = [torch.sqrt(v.index_select(-1, g)) for v, g in zip(var, self._index,
                                                                   strict=True)]
        out = []
        for i, (seg, m) in enumerate(zip(self.chain.segments, model, strict=True)):
            g = self._index[i]
            r = seg.flux[g] - m.index_select(-1, g)
            out.append(r if sd is None else r / sd[i])
        return torch.cat(out, -1)

    def _profiled_vector(self, profiled: model_error_.Profiled) -> torch.Tensor:
        """``[N^{-1/2} r; â]`` over the usable pixels: ``(..., N + K)``."""
        out = [(r * seg.ivar.sqrt())[..., g] for seg, r, g in
               zip(self.chain.segments, profiled.residual, self._good, strict=True)]
        self._n_templates = int(profiled.amplitude.shape[-1])
        return torch.cat([*out, profiled.amplitude], -1)

    def _cholesky(self, theta: torch.Tensor | None = None) -> list[np.ndarray]:
        """Banded Cholesky factor of the covariance per segment (cached when it does not depend
        on theta, i.e. without model variance)."""
        if not self.use_model_variance and 0 in self._chol_cache:
            return self._chol_cache[0]
        if self.use_model_variance:
            theta_t = torch.as_tensor(theta, dtype=DTYPE)
            with torch.no_grad():
                _, cont = self.chain.predict(theta_t)
                var = [v.numpy() for v in self._variances(theta_t, cont)]
        else:
            var = [v.numpy() for v in self._variance]
        out = []
        for i, seg in enumerate(self.chain.segments):
            g = self._good[i].numpy()
            ab = self.noise.banded(seg.wavelength.numpy()[g], var[i][g])
            try:
                out.append(cholesky_banded(ab, lower=True))
            except np.linalg.LinAlgError:
                raise FitError(f"the correlated-noise covariance is not positive definite for "
                               f"segment {i} ({self.noise}); lower the amplitude") from None
        if not self.use_model_variance:
            self._chol_cache[0] = out
        return out

    def whiten(self, residual: np.ndarray, jacobian: np.ndarray | None = None,
               theta: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """``L⁻¹ r`` and ``L⁻¹ J`` for correlated noise (identity otherwise).

        residual: ``(N,)``; jacobian: ``(N, P)``; theta: ``(P,)`` (needed with model variance).
        """
        if self.noise is None:
            return residual, jacobian
        chol = self._cholesky(theta)
        rhs = residual[:, None] if jacobian is None else np.column_stack([residual, jacobian])
        out = np.empty_like(rhs)
        start = 0
        for c in chol:
            n = c.shape[1]
            out[start:start + n] = solve_banded((c.shape[0] - 1, 0), c, rhs[start:start + n])
            start += n
        return out[:, 0], (None if jacobian is None else out[:, 1:])

    def continuum_log_det(self, theta: torch.Tensor) -> torch.Tensor:
        """``Σ_segments log det(AᵀWA)``, ``(...,)``; zero without a continuum."""
        log_det: list[torch.Tensor] = []
        self.chain.predict(torch.as_tensor(theta, dtype=DTYPE), log_det=log_det)
        return sum(log_det, torch.zeros(theta.shape[:-1], dtype=DTYPE))

    # ---------------------------------------------------------------- the number
    def log_likelihood(self, theta) -> np.ndarray:
        """``(...,)`` log-likelihood at ``theta (..., P)`` physical units (float64 numpy)."""
        theta = torch.as_tensor(np.asarray(theta, float), dtype=DTYPE)
        with torch.no_grad():
            if self.use_templates:
                profiled = model_error_.profile(self.chain, theta, self._frozen)
                chi2 = (self._profiled_vector(profiled) ** 2).sum(-1).numpy()
                logdet = self._data_log_det
                logdet_cont = profiled.log_det.numpy()
            elif self.noise is None:
                log_det: list[torch.Tensor] = []
                model, cont = self.chain.predict(theta, log_det=log_det)
                logdet_cont = sum(log_det, torch.zeros(theta.shape[:-1], dtype=DTYPE)).numpy()
                chi2 = np.zeros(theta.shape[:-1])
                logdet = np.zeros(theta.shape[:-1])
                if not self.use_model_variance:  # the data's variance: log det is a constant
                    for seg, m in zip(self.chain.segments, model, strict=True):
                        chi2 = chi2 + (((seg.flux - m) ** 2) * seg.ivar).sum(-1).numpy()
                    logdet = logdet + self._data_log_det
                else:
                    var = self._variances(theta, cont)
                    for i, (seg, m) in enumerate(zip(self.chain.segments, model, strict=True)):
                        g = self._good[i]
                        v = var[i][..., g]
                        chi2 = chi2 + (((seg.flux - m)[..., g]) ** 2 / v).sum(-1).numpy()
                        logdet = logdet + torch.log(v).sum(-1).numpy()
            else:
                logdet_cont = self.continuum_log_det(theta).numpy()
                r = self.residuals(theta).numpy()
                flat_r = r.reshape(-1, r.shape[-1])
                flat_t = theta.reshape(-1, theta.shape[-1]).numpy()
                chi2 = np.empty(len(flat_r))
                logdet = np.empty(len(flat_r))
                for b in range(len(flat_r)):
                    w, _ = self.whiten(flat_r[b], theta=flat_t[b])
                    chi2[b] = w @ w
                    logdet[b] = sum(2 * np.log(c[0]).sum()
                                    for c in self._cholesky(flat_t[b]))
                chi2 = chi2.reshape(r.shape[:-1])
                logdet = logdet.reshape(r.shape[:-1])
        return -0.5 * (chi2 + logdet + self.n_pixels * math.log(2 * math.pi) + logdet_cont)

    def chi2(self, theta) -> np.ndarray:
        """``(...,)`` χ² (whitened residuals squared, summed) at ``theta (..., P)``."""
        theta = torch.as_tensor(np.asarray(theta, float), dtype=DTYPE)
        with torch.no_grad():
            r = self.residuals(theta).numpy()
        if self.noise is None:
            return (r ** 2).sum(-1)
        flat_r = r.reshape(-1, r.shape[-1])
        flat_t = theta.reshape(-1, theta.shape[-1]).numpy()
        out = np.array([float(np.sum(self.whiten(flat_r[b], theta=flat_t[b])[0] ** 2))
                        for b in range(len(flat_r))])
        return out.reshape(r.shape[:-1])
