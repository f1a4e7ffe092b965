"""A spectral emulator with an uncertainty: PCA of the grid + one Gaussian process per component.

The approach of Starfish (Czekala et al. 2015, ApJ 812, 128, §2.3): the normalised grid spectra
are centred on their mean spectrum and decomposed by PCA; the weight of each principal
component is a smooth function of the labels, modelled by an independent Gaussian process with a
squared-exponential kernel (amplitude a_k, one length scale per label, small noise) whose
hyperparameters maximise the marginal likelihood. A prediction gives the mean spectrum
``mu + sum_k w_k(labels) e_k`` and a per-pixel predictive variance
``s² (sum_k var_k(labels) e_k² + basis variance)``, the basis variance being that of the part of
an unseen spectrum outside the components. The GP variances alone are not calibrated (the
kernel's smoothness is an assumption and the components' errors are not independent), so one
factor ``s`` (``sigma_scale_``, stored in the file) is calibrated on the leave-one-out errors of
the interior nodes: the RMS of error / σ there (docs/grids.md gives the coverage on held-out
nodes).

Leave-one-out error: the GP leave-one-out predictions have a closed form (Rasmussen & Williams
2006, eq. 5.12): mu_-i = y_i - [K⁻¹y]_i / [K⁻¹]_ii. Each node's spectrum is rebuilt from its
leave-one-out weights and compared with the true one; ``loo_rms_error_`` is the per-pixel RMS
over nodes. (The PCA basis and hyperparameters are those fitted with every node, the usual
approximation; held-out-node benchmarks in benchmarks/bench_interpolation.py refit without them.)

Nodes missing from the grid are simply absent from the training set; labels inside the grid
bounds but in a hole are predicted with the larger variance the GP gives there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import torch.autograd.forward_ad as fwAD

from .._files import atomic_path
from ..errors import CheckpointError, ModelError, OutOfGridError
from .interpolate import out_of_grid_message
from .store import GridStore

FORMAT = "photosphere-emulator"
FORMAT_VERSION = 2  # 2: one calibrated sigma_scale instead of per-component variance scales
#: How many loaded emulator files keep their conditioned GPs in memory for the next load
#: (:meth:`PCAGPEmulator.load`): fitting many spectra in one process opens the same model each
#: time, and its Cholesky factors (30 × 730² for the optical model, ≈ 0.6 s) need not be redone.
CONDITIONED_CACHE_SIZE = 2
_conditioned: dict[tuple, dict[str, Any]] = {}
#: the GPs' weights K⁻¹y (k, N) in the file (older files lack them: made at load)
GP_WEIGHTS = "gp_weights"


def _typical_spacing(column: np.ndarray, n: int, d: int) -> float:
    """Starting length scale /2 of one label (scaled to 0..1): the node step of a grid axis, or,
    for scattered labels (a training set: nearly every value unique), the typical distance
    between n points in d dimensions, n^(-1/d). (The median gap between unique values of
    scattered labels is ~1/n: a GP started there is nearly diagonal and never recovers.)"""
    values = np.unique(column)
    if values.size < 2:
        return 1.0
    if values.size > n / 2:
        return float(n ** (-1.0 / d))
    return float(np.median(np.diff(values)))


def _kernel(xa: torch.Tensor, xb: torch.Tensor, log_amp: torch.Tensor,
            log_len: torch.Tensor) -> torch.Tensor:
    """Squared-exponential kernel per component: xa (A, d), xb (B, d) -> (k, A, B).

    The squared distances ``Σ_j (xa_j - xb_j)² / ℓ_kj²`` of all k components are one matrix
    product of the per-label squared differences ``(A·B, d)`` with ``1/ℓ² (d, k)``, and the
    exponential is taken in place: conditioning the optical model's 30 GPs on 730 nodes took
    2.6 s with one (k, A, B) pass per label, 0.4 s so (the sums differ in the last bits)."""
    inv_ell2 = torch.exp(-2.0 * log_len)  # (k, d)
    n_a, n_b, k = xa.shape[0], xb.shape[0], log_amp.shape[0]
    if _differentiated(xa, xb, log_amp, log_len):  # training, autodiff: out of place
        d2 = (xa[:, None, :] - xb[None, :, :]) ** 2                       # (A, B, d)
        r2 = (d2.reshape(n_a * n_b, -1) @ inv_ell2.T).T.reshape(k, n_a, n_b)
        return torch.exp(2 * log_amp)[:, None, None] * torch.exp(-0.5 * r2)
    d2 = (xa[:, None, :] - xb[None, :, :]).square_()                      # (A, B, d)
    out = (inv_ell2 @ d2.reshape(n_a * n_b, -1).T).reshape(k, n_a, n_b)   # (k, A, B)
    out.mul_(-0.5).exp_()
    return out.mul_(torch.exp(2 * log_amp)[:, None, None])


def _differentiated(*tensors: torch.Tensor) -> bool:
    """Whether any of ``tensors`` carries a gradient (reverse mode) or a tangent (forward
    mode), so that in-place arithmetic on what is computed from them must be avoided."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return True
    return any(fwAD.unpack_dual(t).tangent is not None for t in tensors)


def _pca(gram: np.ndarray, resid: np.ndarray,
         n_keep: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Principal components (m, n_pix) and variances (m,) of ``resid`` (N, n_pix) from its Gram
    matrix ``resid @ resid.T`` (cheaper than an SVD when N < n_pix), strongest first; only the
    first ``n_keep`` components are formed (all variances are returned)."""
    var, u = np.linalg.eigh(gram)
    order = np.argsort(var)[::-1]
    var, u = np.clip(var[order], 0, None), u[:, order]
    var = var[var > var[0] * 1e-14]
    m = var.size if n_keep is None else min(n_keep, var.size)
    return (u[:, :m].T @ resid) / np.sqrt(var[:m])[:, None], var


class PCAGPEmulator:
    """PCA + per-component GP emulator of a grid's normalised spectra.

    Settings: ``n_components`` (None: the fewest reaching ``variance_fraction`` of the variance),
    ``max_components``, ``n_hyper_nodes`` (nodes used to fit the hyperparameters), ``n_iter``,
    ``seed``. ``fit(grid)`` learns (attributes ending in ``_``) and returns ``self``.
    """

    def __init__(self, n_components: int | None = None, *, variance_fraction: float = 0.9999,
                 max_components: int = 40, n_hyper_nodes: int = 400, n_iter: int = 150,
                 n_basis_nodes: int = 100, seed: int = 0):
        self.n_components = n_components
        self.variance_fraction = variance_fraction
        self.max_components = max_components
        self.n_hyper_nodes = n_hyper_nodes
        self.n_iter = n_iter
        self.n_basis_nodes = n_basis_nodes
        self.seed = seed

    # ------------------------------------------------------------------ training
    def fit(self, grid: GridStore | str | Path, progress: bool = False) -> PCAGPEmulator:
        """Fit to every present node of a grid file, or every spectrum of a training set
        (:mod:`.training_set`: scattered labels, windows; bounds = its label box). Returns
        ``self``."""
        from .training_set import TrainingSet, is_training_set

        if not isinstance(grid, GridStore) and is_training_set(grid):
            ts = TrainingSet(grid)
            self.label_names = ts.label_names
            self.bounds_ = {k: tuple(ts.spec.box[k]) for k in ts.label_names}
            self.wavelength = ts.wavelength.copy()
            self.medium = ts.medium
            self.velocity_step = ts.spec.velocity_step
            self.grid_path_ = str(ts.path)
            return self.fit_arrays(ts.labels, ts.flux.astype(np.float64), progress=progress)
        own = not isinstance(grid, GridStore)
        store = GridStore.open(grid) if own else grid
        try:
            flux = store.flux_all().astype(np.float64)
            keep = store.present.ravel()
            nodes = np.flatnonzero(keep)
            labels = np.array([[store.node_labels(int(i))[n] for n in store.label_names]
                               for i in nodes])
            self.label_names = tuple(store.label_names)
            self.bounds_ = {n: (float(a[0]), float(a[-1])) for n, a in store.axes.items()}
            self.wavelength = store.wavelength.copy()
            self.medium = store.medium
            self.velocity_step = store.velocity_step
            self.grid_path_ = str(store.path)
        finally:
            if own:
                store.close()
        return self.fit_arrays(labels, flux[keep], progress=progress)

    def fit_arrays(self, labels: np.ndarray, flux: np.ndarray, *, label_names=None,
                   wavelength=None, bounds=None, progress: bool = False) -> PCAGPEmulator:
        """Fit to ``labels`` (N, d) and normalised ``flux`` (N, n_pix) directly."""
        labels, flux = np.asarray(labels, float), np.asarray(flux, float)
        if label_names is not None:
            self.label_names = tuple(label_names)
        if wavelength is not None:
            self.wavelength = np.asarray(wavelength, float)
            self.medium = getattr(self, "medium", "air")
            self.velocity_step = getattr(self, "velocity_step", float("nan"))
        if bounds is not None:
            self.bounds_ = dict(bounds)
        n, d = labels.shape
        if n < d + 2:
            raise ModelError(f"an emulator needs at least {d + 2} grid nodes, got {n}")
        lo = np.array([self.bounds_[k][0] for k in self.label_names])
        hi = np.array([self.bounds_[k][1] for k in self.label_names])
        self.label_offset_, self.label_scale_ = lo, np.where(hi > lo, hi - lo, 1.0)
        x = (labels - lo) / self.label_scale_
        mean = flux.mean(axis=0)
        resid = flux - mean
        gram = resid @ resid.T
        vt, var = _pca(gram, resid, self.max_components)
        if self.n_components is None:
            frac = np.cumsum(var) / var.sum()
            k = int(np.searchsorted(frac, self.variance_fraction) + 1)
        else:
            k = int(self.n_components)
        k = max(1, min(k, self.max_components, n - 1, var.size))
        comps = vt[:k]
        weights = resid @ comps.T  # (N, k)
        self.mean_spectrum_ = mean
        self.components_ = comps
        self.train_labels_ = x
        self.train_weights_ = weights
        basis_residual, sampled = self._basis_leave_one_out(gram, resid, k)
        self.truncation_variance_ = (basis_residual ** 2).mean(axis=0)
        self._fit_hyperparameters(x, weights, progress)
        self._condition()
        self._leave_one_out(flux, basis_residual, sampled)
        return self

    def _basis_leave_one_out(self, gram: np.ndarray, resid: np.ndarray,
                             k: int) -> tuple[np.ndarray, np.ndarray]:
        """Part of node i outside the top-k basis computed without node i: (m, n_pix), nodes.

        A new spectrum is not in the span of the training components; this residual (on up to
        ``n_basis_nodes`` nodes) is the basis error an emulator makes on spectra it has not seen.
        """
        n = gram.shape[0]
        rng = np.random.default_rng(self.seed + 1)
        sampled = np.sort(rng.choice(n, self.n_basis_nodes, replace=False)) \
            if n > self.n_basis_nodes else np.arange(n)
        out = np.empty((sampled.size, resid.shape[1]))
        for row, i in enumerate(sampled):
            keep = np.arange(n) != i
            comps, _ = _pca(gram[np.ix_(keep, keep)], resid[keep], k)
            out[row] = resid[i] - (comps @ resid[i]) @ comps
        return out, sampled

    def _fit_hyperparameters(self, x: np.ndarray, w: np.ndarray, progress: bool) -> None:
        rng = np.random.default_rng(self.seed)
        n, d = x.shape
        k = w.shape[1]
        sub = np.sort(rng.choice(n, self.n_hyper_nodes, replace=False)) \
            if n > self.n_hyper_nodes else np.arange(n)
        xs = torch.as_tensor(x[sub])
        ys = torch.as_tensor(w[sub].T)  # (k, m)
        spacing = np.array([_typical_spacing(x[:, j], n, d) for j in range(d)])
        std = ys.std(dim=1).clamp_min(1e-12)
        log_amp = torch.log(std).clone().requires_grad_(True)
        log_len = torch.log(torch.as_tensor(np.tile(2 * spacing, (k, 1)))).requires_grad_(True)
        log_noise = torch.log(1e-3 * std).clone().requires_grad_(True)
        params = [log_amp, log_len, log_noise]
        # plain Adam (torch.optim pulls in torch._dynamo on first use: seconds of import time)
        m1 = [torch.zeros_like(p) for p in params]
        m2 = [torch.zeros_like(p) for p in params]
        lr, b1, b2 = 0.05, 0.9, 0.999
        eye = torch.eye(xs.shape[0], dtype=torch.float64)
        for it in range(1, self.n_iter + 1):
            K = _kernel(xs, xs, log_amp, log_len) + \
                (torch.exp(2 * log_noise)[:, None, None] + 1e-10 * std[:, None, None] ** 2) * eye
            L = torch.linalg.cholesky(K)
            alpha = torch.cholesky_solve(ys[..., None], L)[..., 0]
            nll = 0.5 * (ys * alpha).sum() + torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum()
            grads = torch.autograd.grad(nll, params)
            with torch.no_grad():
                for p, g, u, v in zip(params, grads, m1, m2, strict=True):
                    u.mul_(b1).add_(g, alpha=1 - b1)
                    v.mul_(b2).addcmul_(g, g, value=1 - b2)
                    p -= lr * (u / (1 - b1 ** it)) / ((v / (1 - b2 ** it)).sqrt() + 1e-8)
        self.log_amplitude_ = log_amp.detach().numpy()
        self.log_length_ = log_len.detach().numpy()
        self.log_noise_ = log_noise.detach().numpy()

    def _condition(self, alpha: np.ndarray | None = None) -> None:
        """Weights K⁻¹y of the GPs given all training nodes (also after load), and their
        Cholesky factors; with ``alpha`` (k, N) as stored in the file, those weights, and the
        factors only when a variance is asked for (:meth:`_cholesky`)."""
        self._x = torch.as_tensor(self.train_labels_)
        self._la = torch.as_tensor(self.log_amplitude_)
        self._ll = torch.as_tensor(self.log_length_)
        self._mean = torch.as_tensor(self.mean_spectrum_)
        self._comps = torch.as_tensor(self.components_)
        self._trunc = torch.as_tensor(self.truncation_variance_)
        self._L = None
        if alpha is not None:
            self._alpha = torch.as_tensor(alpha)
            return
        L = self._cholesky()
        y = torch.as_tensor(self.train_weights_.T)
        # K⁻¹y by the two triangular solves (what cholesky_solve does, the same numbers; its
        # batched CPU path took 0.19 s for the optical model's 30 × 730 nodes, these 0.03 s)
        half = torch.linalg.solve_triangular(L, y[..., None], upper=False)
        self._alpha = torch.linalg.solve_triangular(L.mT, half, upper=True)[..., 0]  # (k, N)

    def _cholesky(self) -> torch.Tensor:
        """Cholesky factors (k, N, N) of the GPs' covariance over the training nodes, made on
        first use (≈ 0.5 s for the optical model's 30 × 730 nodes)."""
        if self._L is not None:
            return self._L
        noise = torch.exp(2 * torch.as_tensor(self.log_noise_))
        K = _kernel(self._x, self._x, self._la, self._ll)
        K.diagonal(dim1=-2, dim2=-1).add_(noise[:, None])  # + noise·I, in place
        try:
            self._L = torch.linalg.cholesky(K)
        except RuntimeError as exc:
            raise ModelError(f"the emulator's GP covariance is singular ({exc}); use fewer "
                             "components or a grid without duplicate nodes") from None
        return self._L

    def _leave_one_out(self, flux: np.ndarray, basis_residual: np.ndarray,
                       sampled: np.ndarray) -> None:
        """Per-pixel leave-one-out error and the calibration of the predictive σ.

        The error of node i: its GP weights predicted without it (closed form, all nodes), plus,
        on the sampled nodes, the part of its spectrum outside a basis built without it. Its
        predictive variance is the leave-one-out GP variance (1/[K⁻¹]_ii less the noise term)
        through the squared components plus the basis-error variance. ``sigma_scale_`` is the
        RMS of error / σ over the pixels of the sampled nodes that lie inside the grid on every
        axis: the factor that gives their standardised leave-one-out errors unit variance.
        (Nodes on the grid's faces are left out: without them the emulator extrapolates, which is
        not how it is used. Held-out interior nodes then fall within 1σ / 2σ near 68 % / 95 %:
        tests/grids/test_grid_emulator.py, docs/grids.md.)
        """
        # diag of K⁻¹ per component, one at a time (a (k, N, N) inverse is large for big grids)
        diag = torch.stack([torch.diagonal(torch.cholesky_inverse(L)) for L in self._cholesky()])
        y = torch.as_tensor(self.train_weights_.T)
        w_loo = (y - self._alpha / diag).T.numpy()  # (N, k)
        in_basis = (w_loo - self.train_weights_) @ self.components_  # (N, n_pix)
        err = in_basis[sampled] + basis_residual
        noise = np.exp(2 * self.log_noise_)[:, None]
        var_w = np.clip(1.0 / diag.numpy() - noise, 0.0, None).T[sampled]  # (m, k)
        sigma = np.sqrt(var_w @ self.components_ ** 2 + self.truncation_variance_)
        z = err / np.maximum(sigma, 1e-300)
        inner = self._interior(sampled)
        scale = float(np.sqrt(np.mean(z[inner] ** 2 if inner.any() else z ** 2)))
        self.sigma_scale_ = scale if np.isfinite(scale) and scale > 0 else 1.0
        self.loo_rms_error_ = np.sqrt((err ** 2).mean(axis=0))
        self.loo_abs_error_median_ = float(np.median(np.abs(err)))
        self.loo_abs_error_p95_ = float(np.percentile(np.abs(err), 95))

    def _interior(self, rows: np.ndarray) -> np.ndarray:
        """Which training nodes ``rows`` lie strictly inside the label bounds on every axis."""
        x = self.train_labels_[rows]
        return np.all((x > 1e-9) & (x < 1 - 1e-9), axis=1)

    # ------------------------------------------------------------------ prediction
    @property
    def bounds(self) -> dict[str, tuple[float, float]]:
        return dict(self.bounds_)

    @property
    def n_components_(self) -> int:
        return int(self.components_.shape[0])

    def _check_fitted(self) -> None:
        if not hasattr(self, "_alpha"):
            raise ModelError("this emulator is not trained; call fit(grid) or "
                             "PCAGPEmulator.load(path) first")

    def _scaled(self, labels) -> tuple[torch.Tensor, tuple[int, ...]]:
        self._check_fitted()
        x = torch.as_tensor(labels, dtype=torch.float64)
        d = len(self.label_names)
        if x.ndim == 0 or x.shape[-1] != d:
            raise ModelError(f"labels have shape {tuple(x.shape)}; the last dimension must hold "
                             f"the {d} labels {self.label_names}")
        flat = x.reshape(-1, d)
        for j, name in enumerate(self.label_names):
            lo, hi = self.bounds_[name]
            col = flat[:, j].detach()
            bad = ~((col >= lo - 1e-9) & (col <= hi + 1e-9))
            if bool(bad.any()):
                raise OutOfGridError(out_of_grid_message(name, float(col[bad][0]), lo, hi))
        off = torch.as_tensor(self.label_offset_)
        scale = torch.as_tensor(self.label_scale_)
        return (flat - off) / scale, tuple(x.shape[:-1])

    def predict_weights(self, labels) -> tuple[torch.Tensor, torch.Tensor]:
        """labels (..., d) -> PCA weights mean (B, k) and variance (B, k) (flattened batch)."""
        xs, _ = self._scaled(labels)
        ks = _kernel(xs, self._x, self._la, self._ll)  # (k, B, N)
        mean = (ks * self._alpha[:, None, :]).sum(-1).T
        L = self._cholesky()
        v = torch.linalg.solve_triangular(L, ks.transpose(1, 2), upper=False)  # (k, N, B)
        var = (torch.exp(2 * self._la)[:, None] - (v ** 2).sum(1)).clamp_min(0.0)
        return mean, var.T

    def predict(self, labels) -> torch.Tensor:
        """labels (..., d) physical -> (..., n_pix) normalised flux, float64, differentiable."""
        xs, batch = self._scaled(labels)
        ks = _kernel(xs, self._x, self._la, self._ll)
        w = (ks * self._alpha[:, None, :]).sum(-1).T  # (B, k)
        return (self._mean + w @ self._comps).reshape(*batch, -1)

    __call__ = predict

    def predict_variance(self, labels) -> torch.Tensor:
        """labels (..., d) -> (..., n_pix) predictive variance of the normalised flux: the GP
        weight variances through the squared components plus the basis-error variance, times
        ``sigma_scale_²`` (calibrated on leave-one-out errors, see :meth:`_leave_one_out`)."""
        batch = tuple(torch.as_tensor(labels).shape[:-1])
        _, var = self.predict_weights(labels)
        var = (var @ self._comps ** 2 + self._trunc) * self.sigma_scale_ ** 2
        return var.reshape(*batch, -1)

    def predict_error_templates(self, labels) -> torch.Tensor:
        """labels (..., d) -> (..., k, n_pix) emulator-error templates: eigenspectrum ``e_k``
        times the GP predictive σ of its weight times ``sigma_scale_``. The error is
        ``Σ_k a_k T_k`` with ``a_k ~ N(0, 1)``; the diagonal of this low-rank covariance is
        :meth:`predict_variance` less its basis-error term (per pixel, not carried here)."""
        batch = tuple(torch.as_tensor(labels).shape[:-1])
        _, var = self.predict_weights(labels)
        sigma = var.clamp_min(1e-300).sqrt() * self.sigma_scale_  # (B, k)
        out = sigma[..., None] * self._comps
        return out.reshape(*batch, *self._comps.shape)

    def observe(self, labels, *, vsini=0.0, resolution=None, rv=0.0, wavelength=None,
                epsilon: float = 0.6) -> torch.Tensor:
        """Mean model flux through the observation chain; see
        :func:`photosphere.grids.interpolate.observe`."""
        from .interpolate import observe

        return observe(self, labels, vsini=vsini, resolution=resolution, rv=rv,
                       wavelength=wavelength, epsilon=epsilon)

    # ------------------------------------------------------------------ persistence
    def summary(self) -> dict[str, Any]:
        self._check_fitted()
        return {"kind": "pca-gp", "label_names": list(self.label_names),
                "bounds": {k: list(v) for k, v in self.bounds_.items()},
                "n_components": self.n_components_, "n_training_nodes": len(self.train_labels_),
                "n_pixels": int(self.wavelength.size),
                "loo_abs_error_median": self.loo_abs_error_median_,
                "loo_abs_error_p95": self.loo_abs_error_p95_,
                "loo_rms_error_max": float(np.max(self.loo_rms_error_)),
                "sigma_scale": self.sigma_scale_,
                "truncation_rms_max": float(np.sqrt(np.max(self.truncation_variance_)))}

    def save(self, path: str | Path) -> Path:
        """Write the emulator to HDF5 (atomically; no pickles)."""
        self._check_fitted()
        path = Path(path)
        with atomic_path(path, suffix=".h5.tmp") as tmp, h5py.File(tmp, "w") as f:
            f.attrs.update({
                "format": FORMAT, "format_version": FORMAT_VERSION, "kind": "pca-gp",
                "label_names": json.dumps(list(self.label_names)),
                "bounds": json.dumps(self.bounds_), "medium": self.medium,
                "velocity_step": self.velocity_step, "grid": getattr(self, "grid_path_", ""),
                "loo_abs_error_median": self.loo_abs_error_median_,
                "loo_abs_error_p95": self.loo_abs_error_p95_,
                "sigma_scale": self.sigma_scale_,
                "settings": json.dumps({"n_components": self.n_components,
                                        "variance_fraction": self.variance_fraction,
                                        "max_components": self.max_components,
                                        "n_hyper_nodes": self.n_hyper_nodes,
                                        "n_iter": self.n_iter,
                                        "n_basis_nodes": self.n_basis_nodes,
                                        "seed": self.seed})})
            for name in ("wavelength",):
                f.create_dataset(name, data=getattr(self, name))
            for name in ("mean_spectrum_", "components_", "truncation_variance_",
                         "train_labels_", "train_weights_", "log_amplitude_", "log_length_",
                         "log_noise_", "label_offset_", "label_scale_", "loo_rms_error_"):
                f.create_dataset(name.rstrip("_"), data=getattr(self, name),
                                 compression="gzip", shuffle=True)
            f.create_dataset(GP_WEIGHTS, data=self._alpha.numpy(), compression="gzip",
                             shuffle=True)
        return path

    @classmethod
    def load(cls, path: str | Path) -> PCAGPEmulator:
        """Read an emulator written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"emulator file {path} does not exist; train one with "
                                  "`photosphere grid emulator train GRID -o OUT.h5`")
        try:
            with h5py.File(path, "r") as f:
                if f.attrs.get("format") != FORMAT:
                    raise CheckpointError(f"{path} is not a photosphere emulator file")
                version = int(f.attrs.get("format_version", -1))
                if version != FORMAT_VERSION:
                    raise CheckpointError(
                        f"emulator file {path} has format version {version}, this photosphere "
                        f"reads version {FORMAT_VERSION}; train it again with `photosphere grid "
                        "emulator train GRID -o OUT.h5`")
                settings = json.loads(f.attrs["settings"])
                em = cls(**settings)
                em.label_names = tuple(json.loads(f.attrs["label_names"]))
                em.bounds_ = {k: tuple(v) for k, v in json.loads(f.attrs["bounds"]).items()}
                em.medium = str(f.attrs["medium"])
                em.velocity_step = float(f.attrs["velocity_step"])
                em.grid_path_ = str(f.attrs["grid"])
                em.loo_abs_error_median_ = float(f.attrs["loo_abs_error_median"])
                em.loo_abs_error_p95_ = float(f.attrs["loo_abs_error_p95"])
                em.sigma_scale_ = float(f.attrs["sigma_scale"])
                em.wavelength = f["wavelength"][:]
                for name in ("mean_spectrum_", "components_", "truncation_variance_",
                             "train_labels_", "train_weights_", "log_amplitude_", "log_length_",
                             "log_noise_", "label_offset_", "label_scale_", "loo_rms_error_"):
                    setattr(em, name, f[name.rstrip("_")][:])
                alpha = f[GP_WEIGHTS][:] if GP_WEIGHTS in f else None
            if alpha is not None and alpha.shape != (len(em.log_amplitude_),
                                                     len(em.train_labels_)):
                raise ValueError(f"{GP_WEIGHTS} has shape {alpha.shape}")
        except CheckpointError:
            raise
        except (OSError, KeyError, ValueError) as exc:
            raise CheckpointError(f"emulator file {path} is corrupt or incomplete ({exc}); "
                                  "train it again") from None
        em._condition_from(_file_key(path), alpha)
        return em

    _CONDITIONED = ("_x", "_L", "_alpha", "_la", "_ll", "_mean", "_comps", "_trunc")

    def _condition_from(self, key: tuple, alpha: np.ndarray | None) -> None:
        """:meth:`_condition` (with the file's GP weights ``alpha`` when it holds them), or
        the tensors an earlier load of the same file (same path, size, modification time)
        made: they are only read, never changed in place, so loads share them."""
        hit = _conditioned.pop(key, None)
        if hit is None:
            self._condition(alpha)
            hit = {name: getattr(self, name) for name in self._CONDITIONED}
        else:
            for name in self._CONDITIONED:
                setattr(self, name, hit[name])
        _conditioned[key] = hit        # most recent last
        while len(_conditioned) > CONDITIONED_CACHE_SIZE:
            del _conditioned[next(iter(_conditioned))]


def _file_key(path: Path) -> tuple:
    """Identity of a file's contents for the conditioned-GP cache: resolved path, size and
    modification time (ns): rewriting the file (atomically or not) changes it."""
    stat = path.stat()
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)


def train_emulator(grid: str | Path, output: str | Path, **settings) -> PCAGPEmulator:
    """Fit a :class:`PCAGPEmulator` to a grid file and save it to ``output`` (HDF5)."""
    em = PCAGPEmulator(**settings).fit(grid)
    em.save(output)
    return em

