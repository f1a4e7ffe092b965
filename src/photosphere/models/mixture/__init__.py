"""Two-component photospheres (starspots, double-lined binaries) as mixtures of forward models.

:class:`SpotModel` and :class:`BinaryModel` are forward models (``labels -> normalised flux``)
built on a grid; :func:`fit_mixture` fits them (least squares or MCMC) through the general
fitter; :func:`compare_models` weighs a two-component fit against a single-star one (Δχ², BIC,
Laplace evidence). See docs/mixtures.md.
"""

from .flux_ratio import RATIO_METHODS
from .model import BinaryModel, SpotModel

__all__ = ["RATIO_METHODS", "BinaryModel", "SpotModel"]
