"""Several exposures of a double-lined binary: one spectrum per epoch through the chain.

The observation chain applies one RV per exposure to the whole model spectrum, which is right
for a single star but not for a binary whose components move differently from epoch to epoch.
:class:`EpochChain` asks the model for one rest-frame spectrum per exposure
(``predict_epochs``: star b already shifted by that epoch's ``delta_rv_e``) and sends segment s
the spectrum of its own exposure; the chain's ``rv_e`` is then star a's RV in exposure e. It is
an :class:`~photosphere.infer.chain.ObservationChain` in every other respect, so
:func:`photosphere.infer.fit` and :func:`photosphere.infer.sample` take it as ``chain=``.
"""

from __future__ import annotations

import torch

from ..errors import FitError
from ..ops import lsf
from .chain import DTYPE, ObservationChain


class EpochChain(ObservationChain):
    """Observation chain of a multi-epoch :class:`~photosphere.models.mixture.model.BinaryModel`.

    model: a BinaryModel with ``n_epochs`` equal to the number of exposures; observation: the
    list of exposures; other arguments as ObservationChain. Rotation belongs to the model
    (``vsini_a``, ``vsini_b``), so the chain has none.
    """

    def __init__(self, model, observation, resolution=None, telluric=None,
                 continuum_degree: int | None = 2, **kwargs):
        if not hasattr(model, "predict_epochs"):
            raise FitError(f"EpochChain needs a model with predict_epochs (a BinaryModel), got "
                           f"{type(model).__name__}")
        if kwargs.pop("rotation", False):
            raise FitError("EpochChain: the binary model rotates each star itself (vsini_a, "
                           "vsini_b); build the chain with rotation=False")
        if kwargs.get("macroturbulence") is not None:
            raise FitError("EpochChain: macroturbulence is not modelled for binaries; leave it "
                           "out (each star's vsini absorbs its broadening)")
        super().__init__(model, observation, resolution, telluric, continuum_degree,
                         rotation=False, **kwargs)
        if len(self.exposures) != model.n_epochs:
            raise FitError(f"the model has {model.n_epochs} epochs but {len(self.exposures)} "
                           "exposures were given; build BinaryModel(n_epochs=len(exposures))")

    def broadened(self, labels: torch.Tensor, vsini: torch.Tensor | None,
                  vmac: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Rest-frame model flux of each segment's own exposure after the LSF,
        ``(..., n_model_slice)`` per segment (``vsini`` and ``vmac`` are always None here)."""
        flux = self.model.predict_epochs(labels).to(DTYPE)            # (..., n_epochs, n_pix)
        out = []
        for seg in self.segments:
            i0, i1 = seg.model_slice
            f = flux[..., seg.exposure, i0:i1]
            if seg.resolution is not None:
                if torch.is_tensor(seg.resolution):
                    f = lsf.instrumental_broaden(self._model_wave_t[i0:i1], f, seg.resolution)
                else:
                    f = lsf.gaussian_broaden(f, float(seg.resolution), self.velocity_step)
            out.append(f)
        return out


__all__ = ["EpochChain"]
