"""Typed errors. Every user mistake surfaces as a :class:`PhotosphereError` subclass whose message
names the problem, the bad value, and the fix; never a traceback from deep inside numpy/astropy.

Each subclass also inherits the closest builtin so that generic ``except ValueError`` code works.
"""

from __future__ import annotations


class PhotosphereError(Exception):
    """Base class of every error photosphere raises on purpose."""


class InvalidSpectrumError(PhotosphereError, ValueError):
    """Arrays that do not make a valid spectrum (NaN flux, non-monotonic wavelengths, shapes...)."""


class CoverageError(InvalidSpectrumError):
    """A valid spectrum that does not cover the wavelengths a model reads (e.g. a network's
    layout): another model may read it."""


class UnitsError(PhotosphereError, ValueError):
    """A quantity without units, or with units that cannot be converted to what is needed."""


class FileFormatError(PhotosphereError, ValueError):
    """A file that exists but is truncated, corrupt, empty, or not the product we expected."""


class MissingFileError(PhotosphereError, FileNotFoundError):
    """A file or directory that should exist does not."""


class NetworkError(PhotosphereError, ConnectionError):
    """A download that cannot proceed (offline, refused, checksum mismatch)."""


class OutOfGridError(PhotosphereError, ValueError):
    """Labels or wavelengths outside what a grid or model covers."""


class GridError(PhotosphereError, ValueError):
    """A grid file or grid definition that is incomplete, inconsistent or unknown."""


class DependencyError(PhotosphereError, RuntimeError):
    """An external program or optional package that is missing (compiler, Turbospectrum...)."""


class ModelError(PhotosphereError, ValueError):
    """A forward model or estimator used wrongly (untrained, wrong shapes, too little data)."""


class FitError(PhotosphereError, RuntimeError):
    """A fit that cannot start or cannot produce a meaningful answer."""


class CheckpointError(PhotosphereError, ValueError):
    """A saved model file (HDF5 / checkpoint) that is corrupt, incomplete or of the wrong kind."""


class BenchmarkError(PhotosphereError, ValueError):
    """A benchmark that cannot start: a missing or malformed labels table, an unknown star or
    tier, an output file of another layout."""


class BusyError(PhotosphereError, RuntimeError):
    """An output that another photosphere process is writing right now (its lock is held)."""


class FlaggedResultError(PhotosphereError, RuntimeError):
    """A result that exists but should not be trusted (labels at a grid bound, out of the
    training distribution, χ²_red far above 1); the CLI exits 3 unless ``--allow-flagged``."""
