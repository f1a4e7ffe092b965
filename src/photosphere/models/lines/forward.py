"""The line model as a :class:`~photosphere.model.ForwardModel`: labels -> flux on its own grid.

A cloned :class:`~.model.LineModel` has no stellar labels of its own; what the inference layer can
vary is the strength of its lines. The one label ``line_strength`` multiplies every line's
opacity area A_i (1 = the lines as cloned; for weak lines, ``ln line_strength`` ≈ the change in
ln abundance). τ(λ) is linear in the A_i, so the opacity on the model's grid is computed once and
``predict`` is ``exp(−line_strength · τ₁(λ))``, batched and differentiable in the label.

With ``learned=True`` the opacity is instead re-evaluated from the lines' current torch
parameters at every ``predict``, so gradients of anything computed from the flux reach the line
corrections (Δ ln A, Δ ln σ, Δ ln γ, centre shifts): how the line fit
(:func:`photosphere.infer.lines.fit.fit_lines`) learns them through the observation chain.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch

from ...errors import ModelError
from ...ops.grid import log_uniform_wavelength
from .model import LineModel


class LineForwardModel:
    """``line_strength -> exp(−line_strength · τ(λ))`` on a log-uniform grid.

    lines: the cloned :class:`LineModel`; velocity_step: km/s of the grid that covers
    ``lines.wavelength_range``; medium: the medium of the line centres (``"air"`` or
    ``"vacuum"``); max_strength: upper bound of the label; wavelength_range: (low, high) Å of the
    grid, default ``lines.wavelength_range`` (beyond the lines the flux is 1). learned: False
    (default) freezes the opacity of the lines' parameters at construction; True re-evaluates it
    from their current parameters at every :meth:`predict` (differentiable in them; one line
    evaluation, ∝ Σ window pixels, per call).
    """

    label_names: tuple[str, ...] = ("line_strength",)

    def __init__(self, lines: LineModel, *, velocity_step: float = 0.5,
                 medium: Literal["air", "vacuum"] = "air", max_strength: float = 10.0,
                 wavelength_range: tuple[float, float] | None = None, learned: bool = False):
        if medium not in ("air", "vacuum"):
            raise ModelError(f"medium must be 'air' or 'vacuum', got {medium!r}")
        if not max_strength > 0:
            raise ModelError(f"max_strength must be > 0, got {max_strength}")
        lo, hi = wavelength_range or lines.wavelength_range
        self.wavelength = log_uniform_wavelength(lo, hi, velocity_step)
        self.medium = medium
        self.bounds: Mapping[str, tuple[float, float]] = {"line_strength": (0.0,
                                                                            float(max_strength))}
        self.lines = lines
        self.learned = bool(learned)
        self._wavelength_t = torch.as_tensor(self.wavelength)
        if not self.learned:
            with torch.no_grad():
                self._opacity = lines.opacity(self._wavelength_t).detach()

    def opacity(self) -> torch.Tensor:
        """τ(λ) ``(n_pix,)`` on :attr:`wavelength`: frozen, or from the lines' current
        parameters (``learned``)."""
        return self.lines.opacity(self._wavelength_t) if self.learned else self._opacity

    def predict(self, labels: torch.Tensor) -> torch.Tensor:
        """labels ``(..., 1)`` -> ``(..., n_pix)`` normalised flux on :attr:`wavelength`."""
        opacity = self.opacity()
        labels = torch.as_tensor(labels, dtype=opacity.dtype)
        if labels.shape[-1:] != (1,):
            raise ModelError(f"labels must end in 1 value ('line_strength'), got shape "
                             f"{tuple(labels.shape)}")
        return torch.exp(-labels * opacity.to(labels.device))

    def __repr__(self) -> str:
        return (f"LineForwardModel({self.wavelength.size} px, {self.wavelength[0]:.1f}-"
                f"{self.wavelength[-1]:.1f} Å {self.medium})")

