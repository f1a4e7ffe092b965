"""A small analytic forward model for unit tests (not physics): Gaussian absorption lines on a
log-uniform grid whose depths and widths vary smoothly with (teff, logg, feh)."""

from __future__ import annotations

import numpy as np
import torch

C_KMS = 299792.458


class AnalyticModel:
    """Lines at fixed positions; depth_i = d_i * sigmoid(a_i (teff-5500)/1000 + b_i feh + 0.3 g),
    Gaussian width growing with logg; labels (teff, logg, feh) by default."""

    medium = "air"

    def __init__(self, wavelength_min=5000.0, wavelength_max=5100.0, velocity_step=1.0,
                 n_lines=60, seed=1, label_names=("teff", "logg", "feh")):
        rng = np.random.default_rng(seed)
        dlog = np.log1p(velocity_step / C_KMS)
        n = int(np.floor(np.log(wavelength_max / wavelength_min) / dlog))
        self.wavelength = wavelength_min * np.exp(np.arange(n + 1) * dlog)
        self.label_names = tuple(label_names)
        self.bounds = {"teff": (4000.0, 7000.0), "logg": (3.0, 5.0), "feh": (-1.0, 0.5),
                       "alpha": (-0.2, 0.4), "vmic": (0.5, 2.5)}
        self.bounds = {k: self.bounds[k] for k in self.label_names}
        span = wavelength_max - wavelength_min
        self.centers = torch.as_tensor(wavelength_min + 0.05 * span
                                       + 0.9 * span * rng.random(n_lines))
        self.depth = torch.as_tensor(0.2 + 0.6 * rng.random(n_lines))
        self.coef = torch.as_tensor(rng.normal(0, 1.5, (n_lines, len(self.label_names))))
        self._offset2 = (torch.as_tensor(self.wavelength)[:, None] - self.centers) ** 2

    def _scaled(self, labels):
        lo = torch.as_tensor([self.bounds[n][0] for n in self.label_names], dtype=labels.dtype)
        hi = torch.as_tensor([self.bounds[n][1] for n in self.label_names], dtype=labels.dtype)
        return 2 * (labels - lo) / (hi - lo) - 1

    def predict(self, labels):
        labels = torch.as_tensor(labels, dtype=torch.float64)
        x = self._scaled(labels)                                   # (..., L)
        depth = self.depth * torch.sigmoid(x @ self.coef.T.to(x.dtype))  # (..., n_lines)
        width = 0.05 * (1.0 + 0.3 * x[..., 1:2])                   # (..., 1) Å, log g dependent
        # (..., n_pix, n_lines)
        profile = torch.exp(-0.5 * self._offset2 / width.unsqueeze(-2) ** 2)
        return 1.0 - (profile * depth.unsqueeze(-2)).sum(-1).clamp(max=0.95)


class AnalyticModelWithVariance(AnalyticModel):
    """The analytic model with a constant model variance (like an emulator's error)."""

    def __init__(self, *args, model_sigma=0.01, **kwargs):
        super().__init__(*args, **kwargs)
        self.model_sigma = model_sigma

    def predict_variance(self, labels):
        labels = torch.as_tensor(labels, dtype=torch.float64)
        return torch.full((*labels.shape[:-1], len(self.wavelength)), self.model_sigma ** 2,
                          dtype=torch.float64)


def simulate(model, truth, wavelength, *, resolution=None, snr=100.0, seed=0, continuum=None,
             medium="air", macroturbulence=None):
    """A noisy synthetic observation of ``model`` at ``truth`` through the observation chain.

    wavelength: (n_pix,) or (n_orders, n_pix) Å; continuum: callable of wavelength (default 1);
    macroturbulence: ζ_RT km/s or None.
    Returns a Spectrum or EchelleSpectrum with σ = 1/snr × flux level.
    """
    from photosphere import EchelleSpectrum, Spectrum
    from photosphere.infer.chain import ObservationChain

    wavelength = np.asarray(wavelength, float)
    rng = np.random.default_rng(seed)
    ones = np.ones_like(wavelength)
    cls = Spectrum if wavelength.ndim == 1 else EchelleSpectrum
    dummy = cls(wavelength, ones, ones, medium=medium)
    rv = float(truth.get("rv", 0.0))
    chain = ObservationChain(model, dummy, resolution=resolution, continuum_degree=None,
                             rotation="vsini" in truth, rv_bounds=(rv - 1.0, rv + 1.0),
                             vsini_bounds=(0.0, float(truth.get("vsini", 0.0)) + 1.0),
                             macroturbulence=macroturbulence)
    if chain.n_pixels != wavelength.size:
        raise ValueError("simulate: the wavelengths reach beyond what the model can predict")
    theta = torch.as_tensor(chain.theta_from(truth))
    with torch.no_grad():
        flux, _ = chain.predict(theta)
    clean = np.stack([f.numpy() for f in flux]).reshape(wavelength.shape)
    if continuum is not None:
        clean = clean * continuum(wavelength)
    sigma = np.abs(clean).mean() / snr * np.ones_like(clean)
    noisy = clean + rng.normal(0.0, 1.0, clean.shape) * sigma
    return cls(wavelength, noisy, sigma, medium=medium), clean


class AnalyticModelWithHole(AnalyticModel):
    """The analytic model refusing 6400 < teff < 6800 (like a grid with missing nodes)."""

    def predict(self, labels):
        from photosphere.errors import OutOfGridError

        labels = torch.as_tensor(labels, dtype=torch.float64)
        teff = labels[..., 0]
        if bool(((teff > 6400) & (teff < 6800)).any()):
            raise OutOfGridError("teff in 6400-6800 K is a hole in this grid")
        return super().predict(labels)


class AnalyticModelWithTemplates(AnalyticModelWithVariance):
    """The analytic model with two smooth model-error templates whose size grows with teff
    (``predict_error_templates``), and a diagonal variance (to check the two are not both
    used)."""

    def predict_error_templates(self, labels):
        labels = torch.as_tensor(labels, dtype=torch.float64)
        x = self._scaled(labels)
        wave = torch.as_tensor(self.wavelength)
        shapes = torch.stack([torch.sin(wave / 3.0), torch.cos(wave / 1.3)])  # (2, n_pix)
        size = self.model_sigma * (1.2 + x[..., :1])                           # (..., 1)
        return size.unsqueeze(-1) * shapes
