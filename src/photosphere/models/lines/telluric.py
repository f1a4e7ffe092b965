"""Telluric absorption as cloned lines, with its own RV and a scaling per molecule.

A telluric transmission spectrum (TelFit or TAPAS output, or one file per molecule such as the
APOGEE LBLRTM grids) is cloned into lines exactly like a stellar spectrum
(:func:`.clone.clone_spectrum`), one :class:`LineModel` per group (molecule, or ``"all"`` when
the file does not separate them). The model transmission is

    T(λ) = exp(−Σ_g s_g τ_g(λ / D(v_tell)))

with ``s_g = exp(log_scale_g)`` the column scaling of group g (airmass × abundance) and D the
relativistic Doppler factor of the telluric RV ``v_tell`` (km/s; ≈ 0 for a spectrum in the
observatory frame, −BERV after a barycentric correction).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from scipy.ndimage import maximum_filter1d, uniform_filter1d

from ...errors import FileFormatError, ModelError
from ...ops.doppler import doppler_factor
from .clone import CloneResult, clone_spectrum
from .model import LineModel


def read_telluric(path, *, wavelength_min: float | None = None,
                  wavelength_max: float | None = None, normalise: bool = True
                  ) -> tuple[np.ndarray, np.ndarray]:
    """A telluric transmission spectrum (any product :func:`photosphere.io.read` knows: TelFit
    csv, TAPAS ipac, an APOGEE LBLRTM grid of one molecule, whose airmass-1 node with the column
    scaling closest to 1 is used) as increasing wavelength (Å, the file's medium, vacuum for
    all three) and transmission (n_pix,), cut to [wavelength_min, wavelength_max] Å. With
    ``normalise`` the transmission is divided by its smooth upper envelope (removes
    Rayleigh/aerosol continua)."""
    from ...io import read
    from ...io.telluric import TelluricGrid

    spectrum = read(path)
    if isinstance(spectrum, TelluricGrid):
        spectrum = spectrum.spectrum(int(np.argmin(np.abs(spectrum.scale - 1.0))),
                                     int(np.argmin(np.abs(spectrum.airmass - 1.0))))
    if np.ndim(spectrum.flux) != 1:
        raise FileFormatError(f"{path} is not a 1-D transmission spectrum")
    wave, trans = np.asarray(spectrum.wavelength), np.asarray(spectrum.flux)
    keep = ~np.asarray(spectrum.mask)
    if wavelength_min is not None:
        keep &= wave >= wavelength_min
    if wavelength_max is not None:
        keep &= wave <= wavelength_max
    if keep.sum() < 5:
        raise ModelError(
            f"{path} has fewer than 5 good samples in {wavelength_min}–{wavelength_max} Å "
            f"(file covers {wave[0]:.1f}–{wave[-1]:.1f} Å); pass a range the file covers")
    wave, trans = wave[keep], trans[keep]
    if normalise:
        n = max(3, int(2.0 / np.median(np.diff(wave))))  # ~2 Å envelope
        envelope = uniform_filter1d(maximum_filter1d(trans, n, mode="nearest"), n,
                                    mode="nearest")
        trans = np.clip(trans / np.maximum(envelope, 1e-6), 0.0, 1.0)
    return wave, trans


class TelluricModel(torch.nn.Module):
    """Telluric transmission from cloned line groups with a scale per group and one RV.

    groups: mapping of group name (molecule or ``"all"``) to :class:`LineModel`. The line
    parameters are frozen (they come from the transmission model); ``log_scale`` (n_groups,)
    and ``rv`` (km/s) are learnable.
    """

    def __init__(self, groups: Mapping[str, LineModel], *, rv: float = 0.0):
        super().__init__()
        if not groups:
            raise ModelError("a telluric model needs at least one line group")
        self.names = list(groups)
        self.groups = torch.nn.ModuleList(groups.values())
        for g in self.groups:
            g.requires_grad_(False)
        self.log_scale = torch.nn.Parameter(torch.zeros(len(self.names), dtype=torch.float64))
        self.rv = torch.nn.Parameter(torch.tensor(float(rv), dtype=torch.float64))

    @property
    def scale(self) -> dict[str, float]:
        with torch.no_grad():
            return {n: float(torch.exp(s)) for n, s in zip(self.names, self.log_scale,
                                                            strict=True)}

    def opacity(self, wavelength: torch.Tensor) -> torch.Tensor:
        """Σ_g s_g τ_g on observed wavelengths ``wavelength`` (n_pix,) Å."""
        rest = wavelength / doppler_factor(self.rv)
        tau = torch.zeros_like(wavelength)
        for log_scale, group in zip(self.log_scale, self.groups, strict=True):
            tau = tau + torch.exp(log_scale) * group.opacity(rest)
        return tau

    def forward(self, wavelength: torch.Tensor) -> torch.Tensor:
        """Transmission (n_pix,) on ``wavelength`` Å."""
        return torch.exp(-self.opacity(wavelength))


def clone_telluric(spectra: Mapping[str, tuple[np.ndarray, np.ndarray]], *,
                   prominence: float = 0.002, n_steps: int = 300, n_rounds: int = 2,
                   progress: bool = True) -> tuple[TelluricModel, dict[str, CloneResult]]:
    """Clone each group's transmission spectrum (name -> (wavelength Å, transmission)) into lines.

    Groups whose transmission has no line deeper than ``prominence`` are left out; when none has,
    :class:`ModelError` says so. Returns the :class:`TelluricModel` and each group's clone.
    """
    results: dict[str, CloneResult] = {}
    for name, (wave, trans) in spectra.items():
        try:
            results[name] = clone_spectrum(wave, trans, prominence=prominence, n_steps=n_steps,
                                           n_rounds=n_rounds, progress=progress)
        except ModelError as exc:
            if "no lines deeper" not in str(exc):
                raise
    if not results:
        raise ModelError(f"no telluric line deeper than prominence={prominence} in any group "
                         f"({list(spectra)}); lower the prominence or drop --telluric")
    groups = {name: r.model for name, r in results.items()}
    return TelluricModel(groups), results
