"""The real-star benchmark: engines run on real spectra with reference labels, compared per tier.

``stars`` reads the reference-label table and assigns tiers, ``engines`` runs ``fit`` or ``nn``
on one star, ``run`` runs them over the stars into a resumable table, ``stats`` summarises,
``report`` and ``plot`` show it. ``photosphere benchmark`` is the command (docs/benchmark.md).
"""

from ..datasets.reference_stars import LABELS, TIERS, Star, read_stars, select, tier_of
from .engines import FitEngine, NNEngine, make_engines
from .run import run_benchmark
from .stats import summarise

__all__ = ["LABELS", "TIERS", "FitEngine", "NNEngine", "Star", "make_engines", "read_stars",
           "run_benchmark", "select", "summarise", "tier_of"]
