"""photosphere: stellar spectra to stellar parameters with honest uncertainties."""

from ._version import __version__
from .errors import PhotosphereError
from .spectrum import EchelleSpectrum, Spectrum, SpectrumMeta

__all__ = ["EchelleSpectrum", "PhotosphereError", "Spectrum", "SpectrumMeta", "__version__"]
