"""Two-component photospheres (starspots, double-lined binaries) as mixtures of forward models.

:class:`SpotModel` and :class:`BinaryModel` are forward models (``labels -> normalised flux``)
built on a grid. Fitting them belongs to the inference layer:
:func:`photosphere.infer.mixture.fit_mixture` (least squares or MCMC, through the general
fitter) and :func:`photosphere.infer.selection.compare_models` (a two-component fit against a
single-star one: Δχ², BIC, Laplace evidence). See docs/mixtures.md.
"""

from .flux_ratio import RATIO_METHODS
from .model import BinaryModel, SpotModel

__all__ = ["RATIO_METHODS", "BinaryModel", "SpotModel"]
