"""photosphere: stellar spectra to stellar parameters with honest uncertainties.

The public API, and nothing else::

    import photosphere
    spectrum = photosphere.read("star.fits")
    result = photosphere.fit(spectrum, resolution=115_000)

``read``, ``fit``, ``sample``, ``predict``, ``load_model`` (:mod:`photosphere.api`), the spectrum
types, :class:`~photosphere.result.Result` and the errors. The calls that pull in PyTorch
models are imported on first use, so ``import photosphere`` stays quick.
"""

from typing import TYPE_CHECKING

from . import errors
from ._version import __version__
from .errors import PhotosphereError
from .result import Result
from .spectrum import EchelleSpectrum, Spectrum, SpectrumMeta

if TYPE_CHECKING:  # what __getattr__ below imports on first use
    from .api import fit, load_model, predict, read, sample

_LAZY = {"read": "api", "fit": "api", "sample": "api", "predict": "api", "load_model": "api"}

__all__ = ["EchelleSpectrum", "PhotosphereError", "Result", "Spectrum", "SpectrumMeta",
           "__version__", "errors", "fit", "load_model", "predict", "read", "sample"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'photosphere' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
