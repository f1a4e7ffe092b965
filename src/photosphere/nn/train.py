"""The training loop: plain, seeded, resumable, with the study's learning-rate schedule.

Study protocol (Hüttel & Clemmensen §4): Adam, lr 1e-4, 750 epochs, lr × 0.1 for the last 50;
the DAE with AdamW, lr 3e-4, 1500 epochs. ``PRESETS["full"]`` is that protocol (for a GPU);
``PRESETS["cpu"]`` is a reduced one that trains in minutes on one CPU core (smaller network,
fewer stars and epochs, larger lr): see ``docs``/the report for exactly what is reduced.

After every epoch the checkpoint file is rewritten atomically with the weights and the resume
state (optimiser, epoch, history); ``resume=True`` continues from it and gives the same weights as
an uninterrupted run, because all randomness (data, shuffling, dropout) is drawn from
(seed, epoch). At the end the σ of each label are temperature-scaled on the validation split.

Beyond the study: ``init`` starts from a trained model's weights (fine-tuning, e.g. a longer
low-lr tail or a narrower S/N range), and ``average_epochs`` keeps the average of the weights
after each of the last N epochs (stochastic weight averaging, Izmailov et al. 2018; batch-norm
statistics recomputed for the averaged weights) as the final model.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import CheckpointError, ModelError
from ..model import ForwardModel
from ._cpu import safe_training_function
from .checkpoint import (
    ESTIMATORS,
    LabelScaling,
    _weights_digest,
    build_model,
    load_checkpoint,
    save_checkpoint,
)
from .dae import DenoisedEstimator
from .data import DataConfig, EchelleDataset, Layout, build_datasets
from .evaluate import fit_temperature, predict_split

MODELS = ("resnet", "attention", "dae")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs besides the spectrum source; stored in the checkpoint."""

    model: str = "resnet"  # "resnet", "attention" or "dae"
    covariance: str = "diagonal"
    size: str = "cpu"  # network size: "cpu" (small) or "full" (the study's scale)
    net: dict[str, Any] = field(default_factory=dict)  # overrides of the network config
    data: dict[str, Any] = field(default_factory=dict)  # DataConfig fields
    epochs: int = 40
    lr: float = 1e-3
    lr_decay_epochs: int = 8  # lr × 0.1 for the last this-many epochs
    batch_size: int = 32
    weight_decay: float = 0.0  # > 0 (or model == "dae") uses AdamW
    grad_clip: float = 5.0  # largest gradient norm (0 = off); keeps the Gaussian NLL stable
    seed: int = 0
    dae: str | None = None  # checkpoint of a trained DAE to put in front of the estimator
    calibrate: bool = True  # temperature-scale σ on the validation split after training
    init: str | None = None  # checkpoint file or shipped model name whose weights start the run
    average_epochs: int = 0  # final weights = mean of the weights after each of the last N epochs

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ModelError(f"model={self.model!r} is not known; use one of {MODELS}")
        if self.size not in ("cpu", "full"):
            raise ModelError(f"size={self.size!r} is not known; use 'cpu' or 'full'")
        if self.epochs < 1 or not 0 <= self.lr_decay_epochs <= self.epochs:
            raise ModelError(f"epochs={self.epochs}, lr_decay_epochs={self.lr_decay_epochs}: "
                             "need epochs >= 1 and 0 <= lr_decay_epochs <= epochs")
        if self.model == "dae" and self.dae:
            raise ModelError("a DAE cannot have a DAE in front of it; drop dae=")
        if not 0 <= self.average_epochs <= self.epochs:
            raise ModelError(f"average_epochs={self.average_epochs} must be between 0 and "
                             f"epochs={self.epochs}")
        if self.model == "dae" and (self.average_epochs or self.init):
            raise ModelError("average_epochs and init are for label estimators, not a DAE")

    def data_config(self) -> DataConfig:
        return DataConfig.from_dict(self.data)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["data"] = self.data_config().to_dict()
        return d


PRESETS: dict[str, dict[str, Any]] = {
    # Reduced protocol for one CPU core (under an hour; it made the shipped default model):
    # small network, 3 000 training stars simulated once, 24 epochs at lr 1e-3 with the ×0.1
    # drop over the last 5; S/N drawn log-uniformly in 10-300 per sample, so one model serves
    # both of the study's S/N rows and real spectra of high S/N.
    "cpu": dict(size="cpu", epochs=24, lr=1e-3, lr_decay_epochs=5, batch_size=32,
                data=dict(n_train=3_000, n_val=300, n_test=1_000, snr=(10.0, 300.0))),
    # The study's protocol (GPU): full-size network, lr 1e-4, 750 epochs, ×0.1 for the last 50;
    # 5 667 test spectra as in the paper.
    "full": dict(size="full", epochs=750, lr=1e-4, lr_decay_epochs=50, batch_size=64,
                 data=dict(n_train=40_000, n_val=4_000, n_test=5_667, snr=20.0)),
}
DAE_PRESETS: dict[str, dict[str, Any]] = {
    "cpu": dict(epochs=40, lr=3e-3, lr_decay_epochs=8, weight_decay=1e-2),
    "full": dict(epochs=1500, lr=3e-4, lr_decay_epochs=50, weight_decay=1e-2),
}


def preset(name: str, model: str = "resnet", **overrides: Any) -> TrainConfig:
    """The ``cpu`` or ``full`` training configuration, with ``overrides`` (data merged)."""
    if name not in PRESETS:
        raise ModelError(f"preset={name!r} is not known; use one of {tuple(PRESETS)}")
    base = dict(PRESETS[name])
    if model == "dae":
        base.update(DAE_PRESETS[name])
    data = {**base.pop("data"), **overrides.pop("data", {})}
    return TrainConfig(model=model, data=data, **{**base, **overrides})


def lr_at(config: TrainConfig, epoch: int) -> float:
    """The study's schedule: constant, then × 0.1 for the last ``lr_decay_epochs`` epochs."""
    return config.lr * (0.1 if epoch >= config.epochs - config.lr_decay_epochs else 1.0)


def _net_config(config: TrainConfig, n_orders: int, n_pixels: int) -> dict[str, Any]:
    from .dae import DAEConfig

    shape = dict(n_orders=n_orders, n_pixels=n_pixels)
    if config.model == "dae":
        cfg = DAEConfig.cpu(**shape) if config.size == "cpu" else DAEConfig(**shape)
    else:
        cls = ESTIMATORS[config.model][1]
        shape["covariance"] = config.covariance
        shape["n_labels"] = len(config.data_config().label_names)
        cfg = cls.cpu(**shape) if config.size == "cpu" else cls(**shape)
    base = cfg.to_dict()
    unknown = sorted(set(config.net) - set(base))
    if unknown:
        raise ModelError(f"net settings {unknown} are not known for a {config.model} network; "
                         f"use some of {sorted(base)}")
    return {**base, **config.net}


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, 4, epoch]).generate_state(1)[0])


@dataclass
class TrainResult:
    path: Path
    history: list[dict[str, float]]
    temperature: list[float] | None
    seconds: float


def _build(config: TrainConfig, datasets: dict[str, EchelleDataset]):
    n_orders, n_pixels = datasets["train"].simulator.layout_wavelength.shape
    torch.manual_seed(config.seed)
    model = build_model(config.model, _net_config(config, n_orders, n_pixels))
    if config.dae:
        dae_ck = load_checkpoint(config.dae)
        if dae_ck.kind != "dae":
            raise ModelError(f"dae={config.dae} holds a {dae_ck.kind} model, not a DAE")
        model = DenoisedEstimator(dae_ck.model, model)
    init_sha256 = _load_init(config, model) if config.init else None
    params = [p for p in model.parameters() if p.requires_grad]
    if config.model == "dae" or config.weight_decay > 0:
        opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=config.lr)
    return model, opt, init_sha256


def _estimator(model: nn.Module) -> nn.Module:
    return model.estimator if isinstance(model, DenoisedEstimator) else model


def _load_init(config: TrainConfig, model: nn.Module) -> str:
    """Copy the weights of the trained estimator ``config.init`` into ``model`` (same network;
    the dropout rate may differ, e.g. 0 to fine-tune without it); returns their SHA-256 (the
    provenance of a fine-tuned model)."""
    from .predict import load_model

    init = load_model(config.init)
    ours, theirs = _estimator(model), _estimator(init.model)
    shape = [{k: v for k, v in m.config.to_dict().items() if k != "dropout"}
             for m in (ours, theirs)]
    if init.kind != config.model or shape[0] != shape[1]:
        raise ModelError(f"init={config.init} holds a {init.kind} network {shape[1]}, not this "
                         f"run's {config.model} network {shape[0]}; pass the same --model, "
                         "--covariance and --net as the run that made it (only the dropout "
                         "rate may change)")
    scaling = LabelScaling.from_bounds(config.data_config().bounds)
    if not (torch.equal(init.label_scaling.offset, scaling.offset)
            and torch.equal(init.label_scaling.scale, scaling.scale)):
        raise ModelError(f"init={config.init} was trained on another label box; fine-tune "
                         "with the same bounds (--teff-range) as the run that made it")
    ours.load_state_dict(theirs.state_dict())
    return _weights_digest(theirs.state_dict())


def _float_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()
            if v.is_floating_point()}


def _accumulate(average: dict[str, Any] | None, module: nn.Module) -> dict[str, Any]:
    """Running mean of the floating-point weights: {"count": n, "state": mean over n epochs}."""
    state = _float_state(module)
    if average is None:
        return {"count": 1, "state": state}
    n = average["count"] + 1
    mean = {k: average["state"][k] + (v - average["state"][k]) / n for k, v in state.items()}
    return {"count": n, "state": mean}


@torch.no_grad()
def refresh_batch_norm(model: nn.Module, dataset: EchelleDataset, batch_size: int, epoch: int,
                       device: str = "cpu") -> None:
    """Recompute the batch-norm running statistics of ``model``'s estimator as exact averages
    over one pass of ``dataset`` (its augmented samples of ``epoch``): averaged weights need their
    own statistics (Izmailov et al. 2018). A DAE in front keeps its own."""
    norms = [m for m in _estimator(model).modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the pass
    model.train()
    for batch in dataset.batches(batch_size, epoch, shuffle=True):
        model(batch.images.to(device))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.eval()


def _step_loss(model, batch, scaling: LabelScaling | None, is_dae: bool, device) -> torch.Tensor:
    x = batch.images.to(device)
    if is_dae:
        return model(x, batch.clean.to(device))[1]
    return model(x, scaling.scale_labels(batch.labels).to(device))[2]


@torch.no_grad()
def _validation_loss(model, dataset, config, scaling, device) -> float:
    model.eval()
    total, n = 0.0, 0
    for batch in dataset.batches(config.batch_size):
        total += _step_loss(model, batch, scaling, config.model == "dae", device).item() \
            * len(batch.index)
        n += len(batch.index)
    return total / max(n, 1)


def _resume_state(out: Path, config: TrainConfig, model: nn.Module, opt
                  ) -> tuple[int, list[dict[str, Any]], dict[str, Any] | None]:
    """Load the run stored at ``out`` into ``model`` and ``opt``: (next epoch, history,
    weight average so far)."""
    ck = load_checkpoint(out)
    state = ck.training or {}
    if state.get("config") != config.to_dict():
        raise CheckpointError(f"{out} was trained with a different configuration; resume "
                              "with the same options or start a new file")
    _estimator(model).load_state_dict(_estimator(ck.model).state_dict())
    if "optimizer" not in state:
        raise CheckpointError(f"{out} holds no resume state (a recalibrated or released "
                              "model); start a new file, or fine-tune it with --init")
    opt.load_state_dict(state["optimizer"])
    return int(state["epoch"]) + 1, list(state["history"]), state.get("average")


def _stored_data(data_cfg: DataConfig, simulator) -> dict[str, Any]:
    """What the checkpoint records about the data: the configuration, the order layout, the
    grid (name and SHA-256, which predict checks inputs against) and its line strengths."""
    stored = {**data_cfg.to_dict(), "layout_wavelength": simulator.layout_wavelength.clone(),
              "layout_medium": str(simulator.layout.medium)}
    grid_path = getattr(simulator.source, "path", None)
    if grid_path is not None and Path(grid_path).is_file():
        from .._files import sha256_file as file_sha256

        stored["grid"] = {"name": Path(grid_path).name, "sha256": file_sha256(grid_path)}
    else:  # an in-memory source: nothing to check against later
        stored["grid"] = {"name": type(simulator.source).__name__, "sha256": None}
    token = getattr(simulator.source, "cache_token", None)
    if isinstance(token, str) and token.startswith("emulator:"):  # which emulator source
        stored["grid"]["calibrated"] = token == "emulator:calibrated"
    strengths = getattr(simulator.source, "strengths", None)
    if strengths is not None:  # eval must rebuild the same corrected source
        stored["line_strengths"] = strengths.to_dict()
    return stored


def _train_epoch(model: nn.Module, opt, train_set: EchelleDataset, config: TrainConfig,
                 scaling: LabelScaling, epoch: int, device: str, progress: bool) -> float:
    """One pass over the training images; the mean training loss."""
    model.train()
    total, n = 0.0, 0
    bar = tqdm(train_set.batches(config.batch_size, epoch, shuffle=True),
               total=math.ceil(len(train_set) / config.batch_size),
               desc=f"epoch {epoch + 1}/{config.epochs}", leave=False, disable=not progress)
    for batch in bar:
        loss = _step_loss(model, batch, scaling, config.model == "dae", device)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        total += loss.item() * len(batch.index)
        n += len(batch.index)
        bar.set_postfix(loss=f"{loss.item():.4f}")
    return total / n


@safe_training_function  # oneDNN's backward segfaults on AVX-512/AMX CPUs (nn/_cpu.py)
def train(config: TrainConfig, source: ForwardModel, out: str | os.PathLike, *,
          layout: Layout | None = None, resume: bool = False, device: str | None = None,
          progress: bool = True, datasets: dict[str, EchelleDataset] | None = None,
          stop_after: int | None = None, cache_dir: str | os.PathLike | None = None,
          ) -> TrainResult:
    """Train ``config.model`` on images simulated from ``source``; checkpoint to ``out``.

    resume: continue from the checkpoint at ``out`` (its stored config must match ``config``).
    stop_after: end after this many epochs in total (for tests and time-boxed runs); the
    checkpoint then resumes to the full schedule.
    cache_dir: folder for the noise-free images of the splits (simulated once, reused by later
    runs and by ``eval`` on the same stars); None keeps them in memory only.
    """
    t0 = time.perf_counter()
    out = Path(out)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    data_cfg = config.data_config()
    datasets = datasets or build_datasets(source, data_cfg, layout, cache_dir=cache_dir)
    scaling = LabelScaling.from_bounds(data_cfg.bounds)
    model, opt, init_sha256 = _build(config, datasets)
    start, history, average = (_resume_state(out, config, model, opt) if resume
                               else (0, [], None))
    model.to(device)
    end = config.epochs if stop_after is None else min(config.epochs, stop_after)
    is_dae = config.model == "dae"
    kind = config.model
    stored_data = _stored_data(data_cfg, datasets["train"].simulator)
    for epoch in range(start, end):
        for group in opt.param_groups:
            group["lr"] = lr_at(config, epoch)
        torch.manual_seed(_epoch_seed(config.seed, epoch))  # dropout: same on resume
        train_loss = _train_epoch(model, opt, datasets["train"], config, scaling, epoch,
                                  device, progress)
        val = _validation_loss(model, datasets["val"], config, scaling, device)
        history.append({"epoch": epoch, "lr": lr_at(config, epoch), "train_loss": train_loss,
                        "val_loss": val})
        if progress:
            tqdm.write(f"epoch {epoch + 1}/{config.epochs}  train {train_loss:.4f}  "
                       f"val {val:.4f}  lr {lr_at(config, epoch):.1e}", file=sys.stderr)
        if epoch >= config.epochs - config.average_epochs:
            average = _accumulate(average, _estimator(model))
        training = {"config": config.to_dict(), "epoch": epoch, "history": history,
                    "optimizer": opt.state_dict(), "average": average,
                    "init_sha256": init_sha256}
        save_checkpoint(out, kind, model, label_scaling=None if is_dae else scaling,
                        data=stored_data, training=training)
    if end == config.epochs and config.average_epochs:
        _estimator(model).load_state_dict(average["state"], strict=False)
        refresh_batch_norm(model, datasets["train"], config.batch_size, config.epochs, device)
        val = _validation_loss(model, datasets["val"], config, scaling, device)
        history[-1] = {**history[-1], "val_loss_averaged": val}
        if progress:
            tqdm.write(f"weights averaged over the last {average['count']} epochs: val {val:.4f}",
                       file=sys.stderr)
        training = {**load_checkpoint(out).training, "history": history}
        save_checkpoint(out, kind, model, label_scaling=scaling, data=stored_data,
                        training=training)
    temperature = None
    if end == config.epochs and config.calibrate and not is_dae:
        model.cpu().eval()
        pred = predict_split(model, scaling, datasets["val"], config.batch_size)
        temperature = fit_temperature(pred.residual_z)
        ck = load_checkpoint(out)
        save_checkpoint(out, kind, model, label_scaling=scaling, temperature=temperature,
                        data=stored_data, training=ck.training)
    return TrainResult(out, history, None if temperature is None else temperature.tolist(),
                       time.perf_counter() - t0)


def source_from_grid(path: str | os.PathLike, line_strengths: Any = None,
                     calibrated: bool = True) -> ForwardModel:
    """The spectrum source of an HDF5 file (``photosphere.grids``): the linear interpolator of a
    grid, or the emulator of an emulator file (e.g. the shipped ``optical`` model, by name).

    line_strengths (grids only): a :class:`~photosphere.grids.line_strengths.LineStrengths`,
    its file, or the dict a checkpoint stores (``data["line_strengths"]``): the grid's spectra
    are then corrected by those empirical line strengths. calibrated (emulators only): apply the
    line calibration on real stars the file holds (False: the bare emulator of the syntheses,
    which knows no real star)."""
    from ..grids.emulator import FORMAT as EMULATOR_FORMAT
    from ..grids.interpolate import GridInterpolator
    from ..grids.load import SHIPPED_MODELS, load_emulator, shipped_model_path
    from ..grids.store import GridStore, hdf5_format

    if str(path) in SHIPPED_MODELS and not Path(path).exists():
        path = shipped_model_path(str(path))
    if Path(path).is_file() and hdf5_format(Path(path)) == EMULATOR_FORMAT:
        if line_strengths is not None:
            raise ModelError(f"{path} is an emulator: it carries its own line calibration; "
                             "drop the line strengths")
        if calibrated:
            model = load_emulator(path)
            model.cache_token = "emulator:calibrated"
            return model
        from ..grids.emulator import PCAGPEmulator

        model = PCAGPEmulator.load(path)
        model.path = Path(path)
        model.cache_token = "emulator:uncalibrated"
        return model
    return with_line_strengths(GridInterpolator(GridStore.open(path)), line_strengths)


def with_line_strengths(source: ForwardModel, line_strengths: Any = None) -> ForwardModel:
    """``source`` corrected by empirical line strengths (a
    :class:`~photosphere.grids.line_strengths.LineStrengths`, its file, or the dict a checkpoint
    stores); ``source`` itself when ``line_strengths`` is None."""
    from ..grids.line_strengths import CorrectedSource, LineStrengths

    if line_strengths is None:
        return source
    if isinstance(line_strengths, str | os.PathLike):
        line_strengths = LineStrengths.read(line_strengths)
    elif isinstance(line_strengths, dict):
        line_strengths = LineStrengths.from_dict(line_strengths)
    return CorrectedSource(source, line_strengths)
