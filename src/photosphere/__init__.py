"""photosphere: stellar spectra to stellar parameters with honest uncertainties."""

from .errors import PhotosphereError
from .spectrum import EchelleSpectrum, Spectrum, SpectrumMeta

__version__ = "0.1.0"

__all__ = ["EchelleSpectrum", "PhotosphereError", "Spectrum", "SpectrumMeta", "__version__"]
