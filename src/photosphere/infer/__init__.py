"""Inference: the observation chain, least squares, MCMC, priors and batch fitting."""

from ..result import Result
from .chain import ObservationChain
from .likelihood import CorrelatedNoise, Likelihood
from .mcmc import LogProbability, sample
from .optimize import fit
from .priors import Gaussian, IsochronePrior, Uniform
from .settings import ObservationSettings

__all__ = ["CorrelatedNoise", "Gaussian", "IsochronePrior", "Likelihood", "LogProbability",
           "ObservationChain", "ObservationSettings", "Result", "Uniform", "fit", "sample"]
