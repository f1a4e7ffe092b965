"""The easy calls: read a spectrum, load a model, fit or sample its labels, predict with a network.

>>> import photosphere
>>> spectrum = photosphere.read("star.fits")
>>> result = photosphere.fit(spectrum, resolution=115_000)  # the default model for its range

Each call is a thin layer over the primitives it names (:func:`photosphere.io.read`,
:func:`photosphere.infer.optimize.fit`, :func:`photosphere.infer.mcmc.sample`,
:func:`photosphere.nn.predict.predict_spectrum`) and gives the same answer as chaining them by
hand; the only thing added is σ for a spectrum without uncertainties: it is estimated from the
flux (DER_SNR, :func:`photosphere.ops.noise.with_uncertainty`) and the result says so in
``flags["sigma_estimated"]`` (the S/N per order used).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from .errors import MissingFileError, ModelError
from .spectrum import EchelleSpectrum, Spectrum

#: The names :func:`load_model` (and ``fit(model=...)``) understand for the embedded grid.
MODEL_NAMES = ("grid", "default", "embedded")


def read(path: str | os.PathLike, **kwargs: Any) -> Spectrum | EchelleSpectrum:
    """Read any supported spectrum file (:func:`photosphere.io.read`)."""
    from .io import read as read_file

    return read_file(path, **kwargs)


def load_model(model: str | os.PathLike | None = None):
    """A model by path or name.

    None, ``"grid"``, ``"default"`` or ``"embedded"``: the embedded grid (a
    GridInterpolator; :func:`fit` given no model chooses per spectrum instead);
    ``"optical"``: the shipped optical emulator calibrated on real stars; an HDF5
    file: a grid, an emulator or a Cannon model, told apart by its ``format`` attribute; a
    ``.pt`` file or the name of a shipped network: the network checkpoint (for :func:`predict`).
    An emulator file holding a line calibration (``photosphere grid calibrate-stars``) gives the
    calibrated model (:class:`~photosphere.grids.calibrated.CalibratedModel`).
    """
    from .grids.load import load_grid_model

    if model is None or str(model) in MODEL_NAMES:
        return load_grid_model()
    from .grids.load import SHIPPED_MODELS

    if str(model) in SHIPPED_MODELS and not Path(model).exists():
        return load_grid_model(str(model))
    path = Path(model)
    if not path.exists() and path.suffix in (".h5", ".hdf5"):
        raise MissingFileError(f"model file {path} does not exist; pass a grid, emulator or "
                               "Cannon file, or None for the embedded grid")
    if path.suffix == ".pt" or not path.exists():
        from .nn.predict import load_model as load_network

        return load_network(model)
    from .grids import emulator, store
    from .models import cannon

    kind = store.hdf5_format(path)
    if kind is None:
        raise ModelError(f"{path} is not an HDF5 model file; pass a grid, emulator or Cannon "
                         "(.h5) or a network checkpoint (.pt)")
    if kind == cannon.FORMAT:
        return cannon.CannonModel.load(path)
    if kind == emulator.FORMAT:
        from .grids.load import load_emulator

        return load_emulator(path)
    if kind == store.FORMAT:
        return load_grid_model(str(path))
    raise ModelError(f"{path} has format {kind!r}; load_model reads {store.FORMAT!r}, "
                     f"{emulator.FORMAT!r} and {cannon.FORMAT!r} files and .pt networks")


def _observation(spectrum) -> tuple[Any, list[float] | None]:
    """The spectrum (read when a path) as the CLI fits it: refused when it cannot be a star
    (:func:`photosphere.infer.validity.check_spectrum`), flux ≤ 0 masked, and σ, with the S/N
    used when σ had to be estimated."""
    from .infer.validity import check_spectrum
    from .io.prepare import mask_nonpositive
    from .ops.noise import with_uncertainty

    where = str(spectrum) if isinstance(spectrum, str | os.PathLike) else "the spectrum"
    if isinstance(spectrum, str | os.PathLike):
        spectrum = read(spectrum)
    if isinstance(spectrum, list | tuple):
        prepared = [_observation(s) for s in spectrum]
        snrs = [snr for _, s in prepared if s is not None for snr in s]
        return [s for s, _ in prepared], (snrs or None)
    check_spectrum(spectrum, where)
    spectrum = mask_nonpositive(spectrum)
    if spectrum.has_uncertainty:
        return spectrum, None
    spectrum = with_uncertainty(spectrum)
    return spectrum, list(spectrum.meta.extra["sigma_estimated_snr"])


def _given_model(model):
    """The forward model the caller gave (an object, a path or a name) and the note of it
    (:class:`~photosphere.grids.default_model.ModelChoice`); ``(None, None)`` for None."""
    from .grids.default_model import ModelChoice, given_model

    if model is None:
        return None, None
    if isinstance(model, str | os.PathLike):
        choice = given_model(model)
        model = load_model(model)
    else:
        choice = ModelChoice(type(model).__name__, "given")
    if not hasattr(model, "predict") or not hasattr(model, "label_names"):
        raise ModelError(f"{type(model).__name__} is not a forward model (a network checkpoint?); "
                         "fit and sample need a grid, emulator or Cannon model, and "
                         "photosphere.predict takes networks")
    return model, choice


def _model_for(model, choice, observation):
    """The forward model and its note for ``observation``: the one given (with the optical
    model's window coverage when it names that model), or when none was given the one its
    range calls for (:func:`~photosphere.grids.default_model.choose_model`)."""
    from .grids.default_model import choose_model, with_coverage
    from .grids.load import load_grid_model

    if model is not None:
        return model, with_coverage(choice, observation)
    choice = choose_model(observation)
    return load_grid_model(choice.argument), choice


def _run(engine, spectrum, model, settings: dict[str, Any], mcmc: bool):
    """:func:`fit` and :func:`sample`: the model (a wrong one fails before the spectrum is
    read), the observation, the protocol's defaults and R from the file, ``engine(model,
    observation, **kwargs)``, then the notes and the model's σ_sys."""
    from .infer.protocol import (
        merge_defaults,
        model_noted,
        noted,
        with_file_resolution,
        with_systematic_floor,
    )

    model, choice = _given_model(model)
    observation, snr = _observation(spectrum)
    model, choice = _model_for(model, choice, observation)
    kwargs = merge_defaults(settings, mcmc=mcmc)
    kwargs["settings"], r_source = with_file_resolution(kwargs["settings"], observation)
    result = noted(_noted(engine(model, observation, **kwargs), snr), r_source)
    result = model_noted(result, choice)
    return with_systematic_floor(result, model, kwargs["settings"].resolution)


def _noted(result, snr: list[float] | None):
    if snr is None:
        return result
    note = {"method": "DER_SNR", "snr": snr}
    return dataclasses.replace(result, flags={**result.flags, "sigma_estimated": note})


def fit(spectrum, model=None, **settings: Any):
    """Least-squares labels of ``spectrum`` (a Spectrum, EchelleSpectrum, list of exposures, or
    a file path) with ``model`` (a forward model, a path or name for :func:`load_model`; None:
    the shipped optical model where the spectrum covers at least two of its windows, else the
    embedded grid, :mod:`photosphere.grids.default_model`; the result's
    ``provenance["model"]`` says which and why). ``settings`` go to
    :func:`photosphere.infer.optimize.fit` (``resolution=``, ``fixed=``, ``settings=`` ...);
    where they are silent the protocol for real spectra applies
    (:mod:`photosphere.infer.protocol`: spline continuum, clipping, misfit jitter, R from the
    file, and the σ_sys measured on real stars for the shipped models).
    Returns a :class:`~photosphere.infer.result.Result`."""
    from .infer.optimize import fit as least_squares

    return _run(least_squares, spectrum, model, settings, mcmc=False)


def sample(spectrum, model=None, **settings: Any):
    """Posterior samples of the labels (emcee), as :func:`fit`; ``settings`` go to
    :func:`photosphere.infer.mcmc.sample` (``n_steps=``, ``priors=`` ...)."""
    from .infer.mcmc import sample as mcmc

    return _run(mcmc, spectrum, model, settings, mcmc=True)


def predict(spectrum, model=None, **settings: Any):
    """Labels from a neural network (a checkpoint, a path, a shipped name; None: the default
    network) for one spectrum or file; ``settings`` go to
    :func:`photosphere.nn.predict.predict_spectrum`. Returns a Result (``method="network"``)."""
    from .nn.predict import predict_spectrum

    if isinstance(spectrum, str | os.PathLike):
        spectrum = read(spectrum)
    return predict_spectrum(spectrum, model, **settings).to_result()
