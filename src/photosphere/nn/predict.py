"""The easy call: labels with uncertainties for a spectrum from a trained network.

``predict_spectrum(spectrum, model=None)`` formats the spectrum onto the model's layout
(:func:`~photosphere.nn.inputs.prepare_image`), runs the network and returns an
:class:`NNPrediction` in physical units, with σ temperature-scaled when the checkpoint holds a
calibration and, optionally, MC-dropout epistemic variance. ``model=None`` uses the default model
shipped in ``photosphere/data/nn/default.pt``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import ModelError, PhotosphereError
from ..grids.line_strengths import LineStrengths
from ..spectrum import EchelleSpectrum, Spectrum
from .checkpoint import Checkpoint, load_checkpoint
from .evaluate import predict_ensemble
from .input_calibration import InputCalibration
from .inputs import prepare_image

if TYPE_CHECKING:
    from ..result import Result

TRAIN_COMMAND = "photosphere nn train --preset cpu --grid GRID --out MODEL.pt"


def default_model_path() -> Path:
    return Path(__file__).resolve().parent.parent / "data" / "nn" / "default.pt"


def shipped_models() -> dict[str, Path]:
    """The models shipped with photosphere, by name (file stem in ``photosphere/data/nn``):
    ``default`` (for real spectra: the embedded grid with Sun-calibrated line strengths, S/N
    10-300, R 40 000-120 000 and macroturbulence 0-7 km/s drawn per star), ``plain`` (the
    session-2 default: plain grid, R 115 000, no macroturbulence), ``resnet6k`` and
    ``resnet6k-s2`` (plain grid, more stars and epochs; with ``plain`` session 3's S/N-20
    ensemble), and ``resnet6k-nodrop20``, ``resnet6k-s2-nodrop20``, ``resnet6k-s3-nodrop20``,
    ``resnet6k-s4-nodrop20`` (fine-tuned at S/N 20 without dropout, then mean-recalibrated:
    together the recommended S/N-20 deep ensemble, docs/nn.md); and ``optical`` (the optical
    emulator's 7 windows, any optical spectrum covering 2 of them, [α/Fe] a fifth label;
    a deep ensemble of 4 networks trained by one recipe on the emulator with its line
    calibration on real stars, read through it and with its own inversion bias removed; σ and
    the out-of-distribution limit measured on the benchmark stars: docs/nn.md, "The optical
    network as a deep ensemble")."""
    folder = default_model_path().parent
    return {p.stem: p for p in sorted(folder.glob("*.pt"))} if folder.is_dir() else {}


def load_model(path: str | os.PathLike | None = None) -> Checkpoint:
    """The checkpoint at ``path``, a shipped model by name (:func:`shipped_models`; a file of
    that name in the working directory wins), or the default model when ``path`` is None."""
    if path is None:
        path = default_model_path()
        if not path.exists():
            raise ModelError(
                f"no default neural model is shipped in this installation ({path} is absent); "
                f"train one with `{TRAIN_COMMAND}` and pass it with --model MODEL.pt")
    elif not Path(path).exists() and str(path) in shipped_models():
        path = shipped_models()[str(path)]
    elif not Path(path).exists() and Path(path).suffix != ".pt":
        raise ModelError(f"--model {path}: no such file, and no shipped model has that name; "
                         f"shipped models: {', '.join(shipped_models()) or 'none'}")
    ck = load_checkpoint(path)
    if ck.kind == "dae" or ck.label_scaling is None:
        raise ModelError(f"{path} holds a {ck.kind} model without label scaling; pass a label "
                         "estimator (resnet or attention) checkpoint")
    return ck


@dataclass
class NNPrediction:
    """Labels {name: (value, sigma)} in physical units, their covariance and provenance."""

    labels: dict[str, tuple[float, float]]
    covariance: np.ndarray  # (4, 4)
    label_names: tuple[str, ...]
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"labels": {k: {"value": v, "sigma": s} for k, (v, s) in self.labels.items()},
                "covariance": self.covariance.tolist(), "label_names": list(self.label_names),
                "provenance": self.provenance}

    def to_result(self) -> Result:
        """The same labels as a :class:`~photosphere.result.Result` (``method="network"``;
        no χ² or model spectrum: a network does not fit the data). The grid-consistency check's
        ``out_of_distribution`` verdict, when it ran, is in ``flags``."""
        from ..result import Result

        consistency = self.provenance.get("consistency") or {}
        flags: dict[str, Any] = {"converged": True}
        if "out_of_distribution" in consistency:
            flags["out_of_distribution"] = bool(consistency["out_of_distribution"])
        return Result(values={k: float(v) for k, (v, _) in self.labels.items()},
                      sigma={k: float(s) for k, (_, s) in self.labels.items()},
                      free=tuple(self.label_names), covariance=np.asarray(self.covariance),
                      chi2=float("nan"), n_pixels=0, n_parameters=len(self.label_names),
                      flags=flags, provenance=dict(self.provenance), method="network")


def predict_spectrum(spectrum: Spectrum | EchelleSpectrum,
                     model: Checkpoint | str | list | None = None, *, rv: float = 0.0,
                     mc_samples: int = 0, calibrated: bool = True,
                     max_filled: float = 0.2, check_grid: bool = True,
                     grid: str | os.PathLike | None = None,
                     input_calibration: InputCalibration | str | None = "auto",
                     systematic_floor: dict[str, float] | str | None = "auto",
                     systematic_floor_snr: dict[str, Any] | str | None = "auto",
                     resolution: float | None = None) -> NNPrediction:
    """Labels with uncertainties for one spectrum (see module docstring).

    input_calibration (models trained on an emulator whose file holds a line calibration on
    real stars): ``"auto"`` reads the input through it (:mod:`photosphere.nn.input_calibration`:
    a model trained on the bare syntheses gets the input moved into their space; one trained
    on the calibrated emulator reads the pixels the calibration distrusts, and outliers, from
    the model at its labels), None does not; or an
    :class:`~photosphere.nn.input_calibration.InputCalibration` (e.g. one made without a
    benchmark star). The model's σ on real stars (``systematic_floor`` in the checkpoint,
    measured on benchmark stars) is added in quadrature; ``calibrated=False`` leaves σ raw;
    systematic_floor: ``"auto"`` (the checkpoint's), None (none) or {label: σ_sys} (e.g. the
    floor measured without a benchmark star); systematic_floor_snr: σ_sys measured on the
    benchmark stars degraded to several S/N (``nn calibrate-stars --snr``): ``"auto"`` (the
    checkpoint's, if any), None, or {"snr": levels, "floor": {label: values}, "native_snr":
    the calibration stars' own S/N}; σ_sys at the input's S/N, interpolated in log S/N through
    those levels and ``systematic_floor`` at the native S/N, is then added instead
    (:func:`~photosphere.nn.real_stars.floor_at`; the S/N in provenance ``snr``); resolution: R
    of the spectrum, for the input
    calibration's model images (default: the file's, else the model's nominal R).

    model: a checkpoint (path or loaded), None for the default model, or a list of them for a
    deep ensemble (equal-weight mixture; the spread of the members' means adds to Σ).
    check_grid: compare the input with the grid's image at the predicted labels
    (:mod:`photosphere.nn.consistency`; provenance ``consistency``, with an
    ``out_of_distribution`` flag); grid: the HDF5 grid the model was trained on (default: the
    one its checkpoint names, when that is the embedded grid; models that name none were
    trained on the embedded grid).
    """
    if not (isinstance(mc_samples, int) and 0 <= mc_samples <= 1000):
        raise ModelError(f"mc_samples={mc_samples!r} must be a whole number in 0..1000 (0: no "
                         "MC dropout)")
    cks = _ensemble_members(model)
    ck = cks[0]
    layout = ck.data.get("layout_wavelength")
    if layout is None:
        raise ModelError(f"{ck.path} does not record the order layout it was trained on; "
                         "retrain it with this version of photosphere")
    windows = ck.data.get("window_dropout", 0.0) > 0
    prepared = prepare_image(spectrum, np.asarray(layout), ck.data.get("layout_medium", "air"),
                             rv=rv, max_filled=max_filled, by_window=windows)
    inverse = _input_calibration(ck, input_calibration, grid)
    run = network(cks, calibrated=calibrated, mc_samples=mc_samples)
    names = ck.label_scaling.names
    if resolution is None:
        from ..infer.protocol import file_resolution

        resolution = file_resolution(spectrum)
    mu, cov, consistency = read_image(ck, prepared.image, run, inverse, resolution, grid,
                                      check_grid)
    temperature = ck.temperature if calibrated else None
    floor, snr = _floor(ck, systematic_floor, systematic_floor_snr, prepared.image) \
        if calibrated else (None, None)
    if floor:
        cov = cov + np.diag([float(floor.get(n, 0.0)) ** 2 for n in names])
    sigma = np.sqrt(np.diag(cov))
    return NNPrediction(
        labels={n: (float(mu[i]), float(sigma[i])) for i, n in enumerate(names)},
        covariance=cov, label_names=names,
        provenance={"model": [str(c.path) for c in cks] if len(cks) > 1 else str(ck.path),
                    "kind": ck.kind,
                    "calibrated": temperature is not None, "mc_samples": mc_samples,
                    "rv_removed_kms": rv, "filled_fraction": prepared.filled_fraction,
                    "orders_used": list(prepared.orders_used),
                    "trained_snr": ck.data.get("snr"),
                    "line_strengths": _line_strengths_note(ck),
                    "windows_used": list(prepared.windows_used),
                    "input_calibration": None if inverse is None else {
                        "stars": list(inverse.stars), "zero_point": inverse.zero_point},
                    "sigma_systematic": dict(floor) if floor else None, "snr": snr,
                    "consistency": consistency})


def _floor(ck: Checkpoint, native, by_snr, image: np.ndarray
           ) -> tuple[dict[str, float] | None, float | None]:
    """σ_sys for ``image`` (see ``predict_spectrum``) and the S/N it was chosen at (None when
    no S/N floor applies)."""
    from .real_stars import floor_at, image_snr

    native = ck.data.get("systematic_floor") if native == "auto" else native
    by_snr = ck.data.get("systematic_floor_snr") if by_snr == "auto" else by_snr
    if not by_snr:
        return native, None
    snr = image_snr(image)
    return floor_at(native, by_snr, snr), (snr if np.isfinite(snr) else None)


def _ensemble_members(model: Checkpoint | str | list | None) -> list[Checkpoint]:
    """The loaded checkpoints of a model (a checkpoint or path, None for the default model)
    or of a deep ensemble (a list of them), refused unless every member was trained on the
    first one's setup: the same labels, order layout and grid line strengths."""
    members = model if isinstance(model, list) else [model]
    cks = [m if isinstance(m, Checkpoint) else load_model(m) for m in members]
    ck = cks[0]
    for other in cks[1:]:
        same = (other.label_scaling.names == ck.label_scaling.names and np.array_equal(
            np.asarray(other.data.get("layout_wavelength")),
            np.asarray(ck.data.get("layout_wavelength"))))
        same = same and line_strength_digest(other) == line_strength_digest(ck)
        if not same:
            raise ModelError(f"ensemble members {ck.path} and {other.path} differ in labels, "
                             "order layout or grid line strengths; combine only models trained "
                             "on the same setup")
    return cks


def network_members(checkpoints: Sequence[Checkpoint], *, calibrated: bool = True
                    ) -> list[tuple]:
    """(model, label scaling, σ temperature) per checkpoint, as ``predict_ensemble`` takes
    them; ``calibrated=False``: raw σ, no temperature (a stored deep ensemble also without its
    members' temperatures, :meth:`~photosphere.nn.ensemble.DeepEnsemble.uncalibrated`)."""
    from .ensemble import DeepEnsemble

    if calibrated:
        return [(c.model, c.label_scaling, c.temperature) for c in checkpoints]
    return [(c.model.uncalibrated() if isinstance(c.model, DeepEnsemble) else c.model,
             c.label_scaling, None) for c in checkpoints]


def network(checkpoints: Sequence[Checkpoint], *, calibrated: bool = True,
            mc_samples: int = 0):
    """``run(image) -> (μ (k,), Σ (k, k))`` float64: the networks of ``checkpoints`` (several:
    a deep ensemble) on one image, each with its σ temperature unless ``calibrated`` is False."""
    members = network_members(checkpoints, calibrated=calibrated)

    def run(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mu, cov = predict_ensemble(members, torch.from_numpy(np.asarray(image, np.float32)),
                                   mc_samples=mc_samples)
        return mu[0].double().numpy(), cov[0].double().numpy()

    return run


def read_image(ck: Checkpoint, image: np.ndarray, run, inverse: InputCalibration | None,
               resolution: float | None = None, grid=None, check_grid: bool = True):
    """A prepared image read by ``run`` (:func:`network`), through the input calibration
    ``inverse`` when given, then checked against the model's grid (consistency and the training
    box): (μ, Σ, the check's dict or None)."""
    if inverse is None:
        mu, cov = run(image)
    else:
        image, mu, cov = inverse.read(image, run, ck.label_scaling.names, resolution)
    consistency: dict[str, Any] | None = None
    if check_grid:
        consistency = _consistency(ck, image, mu, grid)
        _box_check(ck, mu, consistency)
        _resolution_check(ck, resolution, consistency)
    return mu, cov, consistency


def line_calibration_of(ck: Checkpoint, grid=None):
    """The line calibration on real stars of the emulator ``ck`` was trained on (a
    :class:`~photosphere.grids.calibrated.LineCalibration`), through which ``nn predict``
    reads real spectra (:func:`model_input_calibration`), or None: a model trained on a grid,
    or on an emulator file (at hand) that holds none."""
    if "calibrated" not in (ck.data.get("grid") or {}):  # recorded for emulators only
        return None
    path = model_grid(ck, grid)
    return None if path is None else _file_calibration(str(path), _file_digest(path))


@functools.lru_cache(maxsize=4)
def _file_calibration(path: str, digest: str):
    """The line calibration in the emulator file at ``path`` (None if it holds none), read
    once per file version."""
    from ..grids.calibrated import has_calibration, read_calibration

    return read_calibration(path) if has_calibration(path) else None


def trained_calibrated(ck: Checkpoint) -> bool:
    """Whether ``ck`` was trained on an emulator with its line calibration applied (else on
    the bare emulator, or on a grid)."""
    return bool((ck.data.get("grid") or {}).get("calibrated", False))


def _input_calibration(ck: Checkpoint, given, grid) -> InputCalibration | None:
    """The input calibration ``predict_spectrum`` applies (see its ``input_calibration``)."""
    if given is None or given == "none":
        return None
    if isinstance(given, InputCalibration):
        return given
    if given != "auto":
        raise ModelError(f"input_calibration={given!r}: use 'auto', None or an "
                         "InputCalibration")
    calibration = line_calibration_of(ck, grid)
    return None if calibration is None else model_input_calibration(
        ck, calibration, model_grid(ck, grid))


def model_input_calibration(ck: Checkpoint, calibration, path) -> InputCalibration:
    """The input calibration of ``ck`` for a star described by ``calibration`` (the line
    calibration of the emulator file ``path`` the model was trained on, or that calibration
    made without the star), refined with the emulator's own images; for a model trained on
    the calibrated emulator, the file's whole calibration is the training model
    (:meth:`InputCalibration.with_models`) and the network's own inversion bias is removed
    last (:mod:`photosphere.nn.inversion_bias`; measured on the benchmark stars, docs/nn.md)."""
    import dataclasses

    from .data import DataConfig, StoredLayout
    from .inversion_bias import BIAS_ROUNDS

    digest = _file_digest(path)
    trained = _file_calibration(str(path), digest) if trained_calibrated(ck) else None
    found = InputCalibration.with_models(calibration, StoredLayout.of(ck),
                                         _bare_emulator(str(path), digest),
                                         DataConfig.from_dict(ck.data), trained=trained)
    return found if trained is None else dataclasses.replace(found, bias_rounds=BIAS_ROUNDS)


def _box_check(ck: Checkpoint, mu: np.ndarray, consistency: dict[str, Any]) -> None:
    """Flag a prediction at or beyond the edge of the training box (within 1 % of its width) as
    out of distribution: a network answers a star outside its box with the nearest edge."""
    bounds = ck.data.get("bounds") or {}
    edge = []
    for i, name in enumerate(ck.label_scaling.names[:3]):
        if name not in bounds:
            continue
        lo, hi = (float(v) for v in bounds[name])
        tol = 0.01 * (hi - lo)
        if mu[i] <= lo + tol or mu[i] >= hi - tol:
            edge.append(name)
    consistency["at_box_edge"] = edge
    if edge:
        consistency["out_of_distribution"] = True


#: how far an input's R may lie outside the range of R a network was trained on before its
#: reading is flagged out of distribution (a factor either way: instruments' nominal R are
#: quoted to ≈ 20 %, and the line widths a network learned scale with 1/R)
RESOLUTION_MARGIN = 1.25


def _resolution_check(ck: Checkpoint, resolution: float | None,
                      consistency: dict[str, Any]) -> None:
    """Flag an input whose R (the file's, or the one given) lies outside the range of R the
    network was trained on (÷ / × :data:`RESOLUTION_MARGIN`) as out of distribution; models
    trained at one R, and inputs of unknown R, are not judged."""
    trained = ck.data.get("resolution")
    if resolution is None or not isinstance(trained, list | tuple) or len(trained) != 2:
        return
    lo, hi = sorted(float(v) for v in trained)
    outside = not lo / RESOLUTION_MARGIN <= float(resolution) <= hi * RESOLUTION_MARGIN
    consistency["resolution"] = {"input": float(resolution), "trained": [lo, hi],
                                 "outside": outside}
    if outside:
        consistency["out_of_distribution"] = True


def read_for_prediction(path: str | os.PathLike, *, wave: str | None = None,
                        blaze: str | None = None, medium: str | None = None):
    """Read a spectrum file as ``photosphere nn predict`` does: any reader of
    :mod:`photosphere.io`, e2ds frames deblazed; ``wave``/``blaze`` files for e2ds frames and
    ``medium`` ('air' or 'vacuum') for files that do not record it, when given."""
    from ..io import identify
    from ..io.prepare import read_spectrum

    kw = {k: v for k, v in (("wave", wave), ("blaze", blaze), ("medium", medium)) if v}
    if "e2ds" in identify(str(path)):
        kw["deblaze"] = True
    return read_spectrum(str(path), **kw)


def model_grid(ck: Checkpoint, grid: str | os.PathLike | None = None) -> Path | None:
    """The grid file ``ck`` was trained on: ``grid`` if given (checked against the digest the
    checkpoint records), else the embedded grid when it is that one or when the checkpoint
    records none (every shipped model was trained on it); None when it is not at hand."""
    from ..grids.presets import default_grid_path

    record = ck.data.get("grid")
    recorded = (record or {}).get("sha256")
    if grid is not None:
        if not Path(grid).is_file():
            raise ModelError(f"--grid {grid} does not exist; pass the HDF5 grid the model was "
                             "trained on")
        if recorded and _file_digest(grid) != recorded:
            raise ModelError(f"{ck.path} was trained on another grid than {grid} "
                             f"({ck.data['grid'].get('name')}); pass that one")
        return Path(grid)
    if record is not None and recorded is None:
        return None  # trained on a source that is not a file
    from ..grids.load import DATA_DIR, SHIPPED_MODELS

    for shipped in SHIPPED_MODELS.values():  # e.g. the optical emulator
        path = DATA_DIR / shipped
        if recorded and path.name == (record or {}).get("name") and path.is_file() \
                and _file_digest(path) == recorded:
            return path
    embedded = default_grid_path()
    if not embedded.is_file():
        return None
    if recorded is None or _file_digest(embedded) == recorded:
        return embedded
    return None


def _file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file, computed once per (path, size, modification time)."""
    st = Path(path).stat()
    return _digest_once(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _digest_once(path: str, size: int, mtime_ns: int) -> str:
    from .._files import sha256_file

    return sha256_file(path)


_SIMULATORS: dict[tuple, Any] = {}  # the last few consistency-check simulators


def _grid_simulator(ck: Checkpoint, path: Path):
    """The simulator a consistency check compares with: ``ck``'s layout, R, ε and line
    strengths over the grid at ``path``, built once per such set (predicting many spectra
    loads the grid once)."""
    from .data import DataConfig, EchelleSimulator, StoredLayout
    from .train import source_from_grid

    layout = StoredLayout.of(ck)
    cfg = DataConfig.from_dict(ck.data)
    calibrated = (ck.data.get("grid") or {}).get("calibrated", True)
    key = (str(path), _file_digest(path), line_strength_digest(ck), calibrated,
           hashlib.sha256(np.ascontiguousarray(layout.wavelength).tobytes()).hexdigest(),
           json.dumps([layout.medium, cfg.nominal_resolution, cfg.epsilon, cfg.fixed,
                       cfg.columns]))
    if key not in _SIMULATORS:
        if len(_SIMULATORS) >= 4:
            _SIMULATORS.pop(next(iter(_SIMULATORS)))
        _SIMULATORS[key] = EchelleSimulator(
            source_from_grid(path, ck.data.get("line_strengths"), calibrated=calibrated),
            layout, cfg.nominal_resolution, cfg.epsilon, cfg.fixed, cfg.columns)
    return _SIMULATORS[key]


@functools.lru_cache(maxsize=2)
def _bare_emulator(path: str, digest: str):
    """The bare emulator of the file at ``path`` (loaded once per file version)."""
    from .train import source_from_grid

    return source_from_grid(path, calibrated=False)


def _consistency(ck: Checkpoint, image: np.ndarray, mu: np.ndarray,
                 grid: str | os.PathLike | None) -> dict[str, Any]:
    from .consistency import grid_consistency
    from .data import DataConfig, complete_labels

    path = model_grid(ck, grid)
    if path is None:
        return {"checked": False, "reason": f"the grid {ck.path} was trained on "
                f"({(ck.data.get('grid') or {}).get('name')}) is not at hand; pass --grid"}
    try:
        simulator = _grid_simulator(ck, path)
        cfg = DataConfig.from_dict(ck.data)
        found = grid_consistency(image, complete_labels(mu, cfg)[0].numpy(), simulator,
                                 float(np.mean(cfg.macroturbulence)),
                                 limit=ck.data.get("mismatch_limit")).to_dict()
    except PhotosphereError as exc:  # e.g. a grid that does not cover the model's layout
        return {"checked": False, "reason": str(exc)}
    return {"checked": True, "grid": str(path), **found}


def line_strength_digest(ck: Checkpoint) -> str | None:
    """Which empirical line strengths a model's grid was corrected by (None: the plain grid)."""
    stored = ck.data.get("line_strengths")
    return None if stored is None else LineStrengths.from_dict(stored).digest


def _line_strengths_note(ck: Checkpoint) -> dict[str, Any] | None:
    """Where a model's grid was corrected by empirical line strengths: the reference star (in
    sample for this model) and the correction's digest; None for the plain grid."""
    digest = line_strength_digest(ck)
    if digest is None:
        return None
    ref = dict(ck.data["line_strengths"].get("reference", {}))
    return {"reference_labels": ref.get("labels"), "observed": ref.get("observed"),
            "digest": digest}
