"""One-file checkpoints for the neural estimators: config, weights, label scaling, calibration,
and (while training) the optimiser, epoch and RNG state for resuming.

The file is a ``torch.save`` of plain dicts, lists, strings, numbers and tensors only, so it loads
with ``torch.load(path, weights_only=True)`` and no arbitrary pickle is ever executed. A SHA-256 of
the weights is stored inside and checked on load, so a truncated or corrupted file raises
:class:`~photosphere.errors.CheckpointError` instead of silently giving wrong labels.

Weights are stored in float32, or in float16 (``precision="float16"``: half the file, for
released models; loaded back into float32 networks, so only the stored values are rounded, to
≈ 1 part in 2 000). A checkpoint re-saved from a loaded one keeps its precision
(:attr:`Checkpoint.precision`).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._files import atomic_path
from ..errors import CheckpointError, MissingFileError
from .attention import AttentionConfig, AttentionNet
from .dae import DAEConfig, DenoisedEstimator, DenoisingAutoencoder
from .ensemble import DeepEnsemble, EnsembleConfig
from .resnet import ResNet, ResNetConfig

FORMAT = "photosphere.nn"
VERSION = 1
ESTIMATORS = {"resnet": (ResNet, ResNetConfig), "attention": (AttentionNet, AttentionConfig)}
KINDS = (*ESTIMATORS, "ensemble", "dae")  # ensemble: several estimators as one (nn.ensemble)
PRECISIONS = {"float32": torch.float32, "float16": torch.float16}  # how weights are stored


@dataclass(frozen=True)
class LabelScaling:
    """Affine map between physical labels and the scaled labels the networks see.

    scaled = (physical - offset) / scale; names: label names (teff, logg, feh, vsini).
    """

    names: tuple[str, ...]
    offset: torch.Tensor  # (k,) physical units
    scale: torch.Tensor  # (k,) physical units per scaled unit

    @classmethod
    def from_bounds(cls, bounds: dict[str, tuple[float, float]]) -> LabelScaling:
        """Centre each label's box on 0 with half-width 1 (so each label weighs the same)."""
        names = tuple(bounds)
        lo = torch.tensor([bounds[n][0] for n in names], dtype=torch.float32)
        hi = torch.tensor([bounds[n][1] for n in names], dtype=torch.float32)
        return cls(names, (lo + hi) / 2, (hi - lo) / 2)

    def scale_labels(self, physical: torch.Tensor) -> torch.Tensor:
        return (physical - self.offset) / self.scale

    def unscale(self, mu: torch.Tensor,
                scale_tril: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, L) in scaled units -> physical units: μ·s + offset, diag(s) L."""
        return mu * self.scale + self.offset, self.scale.unsqueeze(-1) * scale_tril

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "offset": self.offset.clone(),
                "scale": self.scale.clone()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelScaling:
        return cls(tuple(d["names"]), d["offset"].float(), d["scale"].float())


@dataclass
class Checkpoint:
    """What a checkpoint file holds, rebuilt into live objects."""

    kind: str  # "resnet", "attention" or "dae"
    model: nn.Module  # the estimator (wrapped with its DAE when it has one) or the DAE
    label_scaling: LabelScaling | None
    temperature: torch.Tensor | None  # (k,) σ multipliers from calibration, or None
    data: dict[str, Any]  # the data configuration the model was trained on
    training: dict[str, Any] | None  # optimiser / epoch / RNG state, absent in a released model
    path: Path | None = None
    precision: str = "float32"  # how the file stores the weights (a key of PRECISIONS)


def _weights_digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


#: Largest network a checkpoint may ask for (weights), and largest input image (orders × pixels):
#: far above every shipped model (≈ 2 M weights, 8 × 4096 pixels), far below what would exhaust
#: a workstation's memory.
MAX_PARAMETERS = 200_000_000
MAX_IMAGE_PIXELS = 4_000_000


def _classes(kind: str):
    if kind == "dae":
        return DenoisingAutoencoder, DAEConfig
    if kind == "ensemble":
        return DeepEnsemble, EnsembleConfig
    if kind not in ESTIMATORS:
        raise CheckpointError(f"model kind {kind!r} is not known; expected one of {KINDS}")
    return ESTIMATORS[kind]


def _check_config(kind: str, config: Any):
    """The config object of ``kind``, checked against :data:`MAX_PARAMETERS` and
    :data:`MAX_IMAGE_PIXELS` by building the network on the ``meta`` device (shapes only, no
    memory) before anything is allocated; CheckpointError for anything invalid."""
    net_cls, cfg_cls = _classes(kind)
    if not isinstance(config, dict):
        raise CheckpointError(f"the {kind} config in the checkpoint is not a mapping "
                              f"({type(config).__name__})")
    try:
        cfg = cfg_cls(**config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"the {kind} config in the checkpoint is invalid: {exc}") from None
    if kind == "ensemble":  # the members' config is checked as a member's
        _check_config(cfg.member_kind, cfg.member)
    sizes = {k: v for k, v in config.items() if k in ("n_orders", "n_pixels")}
    if any(not isinstance(v, int) or v < 1 for v in sizes.values()):
        raise CheckpointError(f"the {kind} config in the checkpoint has invalid image sizes "
                              f"{sizes}; they must be whole numbers >= 1")
    n_image = int(sizes.get("n_orders", 1)) * int(sizes.get("n_pixels", 1))
    if n_image > MAX_IMAGE_PIXELS:
        raise CheckpointError(f"the {kind} config asks for {n_image} input pixels (limit "
                              f"{MAX_IMAGE_PIXELS}); the checkpoint is crafted or damaged")
    try:
        with torch.device("meta"):
            probe = net_cls(cfg)
    except Exception as exc:  # any failure to build the shapes is an invalid config
        raise CheckpointError(f"the {kind} config in the checkpoint does not build a network "
                              f"({type(exc).__name__}: {exc}); the file is damaged or from "
                              "another version") from None
    n = sum(p.numel() for p in probe.parameters()) + sum(b.numel() for b in probe.buffers())
    if n > MAX_PARAMETERS:
        raise CheckpointError(f"the {kind} config asks for {n:,} weights (limit "
                              f"{MAX_PARAMETERS:,}, {4 * n / 1e9:.0f} GB); the checkpoint is "
                              "crafted or damaged")
    return cfg


def build_model(kind: str, config: dict[str, Any]) -> nn.Module:
    """A freshly initialised network of ``kind`` from a plain config dict (checked first, see
    :func:`_check_config`)."""
    net_cls, _ = _classes(kind)
    return net_cls(_check_config(kind, config))


def _stored(module: nn.Module, precision: str) -> dict[str, torch.Tensor]:
    """``module``'s state dict as stored: a CPU copy, floating tensors in ``precision``."""
    dtype = PRECISIONS[precision]
    return {k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu().clone()
            for k, v in module.state_dict().items()}


def _precision(states: list[dict[str, torch.Tensor]]) -> str:
    """The precision a file's weights are stored in (float16 if any floating tensor is)."""
    half = any(v.dtype == torch.float16 for st in states for v in st.values())
    return "float16" if half else "float32"


def _split(model: nn.Module) -> tuple[nn.Module, DenoisingAutoencoder | None]:
    if isinstance(model, DenoisedEstimator):
        return model.estimator, model.dae
    return model, None


def save_checkpoint(path: str | os.PathLike, kind: str, model: nn.Module, *,
                    label_scaling: LabelScaling | None = None,
                    temperature: torch.Tensor | None = None, data: dict[str, Any] | None = None,
                    training: dict[str, Any] | None = None, precision: str = "float32") -> Path:
    """Write a checkpoint atomically; returns its path. ``training`` holds resume state;
    ``precision``: how the weights are stored, "float32" or "float16" (module docstring)."""
    if kind not in KINDS:
        raise CheckpointError(f"model kind {kind!r} is not known; expected one of {KINDS}")
    if precision not in PRECISIONS:
        raise CheckpointError(f"weight precision {precision!r} is not known; expected one of "
                              f"{tuple(PRECISIONS)}")
    estimator, dae = _split(model)
    state = _stored(estimator, precision)
    payload: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "kind": kind,
        "config": estimator.config.to_dict(), "state_dict": state,
        "label_scaling": None if label_scaling is None else label_scaling.to_dict(),
        "temperature": None if temperature is None else temperature.detach().cpu().clone(),
        "data": dict(data or {}), "training": training, "dae": None,
    }
    digest_parts = [_weights_digest(state)]
    if dae is not None:
        dae_state = _stored(dae, precision)
        payload["dae"] = {"config": dae.config.to_dict(), "state_dict": dae_state}
        digest_parts.append(_weights_digest(dae_state))
    payload["sha256"] = "/".join(digest_parts)
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def _read_payload(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise MissingFileError(f"checkpoint {path} does not exist; train one with "
                               "`photosphere nn train --preset cpu --grid GRID --out FILE`")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for damaged zips and pickles
        raise CheckpointError(
            f"{path} is not a readable photosphere model checkpoint (truncated, corrupt, not a "
            f"torch file, or holding objects other than tensors: {type(exc).__name__}); retrain "
            "or re-download it") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a torch file but not a photosphere.nn checkpoint "
                              "(no 'format' marker); pass a file written by `photosphere nn train`")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {payload.get('version')!r}; this "
                              f"photosphere reads version {VERSION}")
    missing = {"kind", "config", "state_dict", "sha256"} - set(payload)
    if missing:
        raise CheckpointError(f"{path} lacks {sorted(missing)}; the file is incomplete")
    return payload


def _load_weights(module: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match the stored config: "
                              f"{str(exc)[:300]}") from None


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Rebuild the model (in eval mode) and everything needed to use or resume it from one file."""
    path = Path(path)
    payload = _read_payload(path)
    states = [payload["state_dict"]] + (
        [] if payload.get("dae") is None else [(payload["dae"] or {}).get("state_dict")]
        if isinstance(payload["dae"], dict) else [None])
    if not all(isinstance(st, dict) and all(isinstance(v, torch.Tensor) for v in st.values())
               for st in states):
        raise CheckpointError(f"{path}: the weights are not stored as a mapping; the file is "
                              "damaged")
    _check_config(payload["kind"], payload["config"])
    if payload.get("dae") is not None:
        _check_config("dae", payload["dae"].get("config"))
    digests = [_weights_digest(payload["state_dict"])]
    if payload.get("dae") is not None:
        digests.append(_weights_digest(payload["dae"]["state_dict"]))
    if "/".join(digests) != payload["sha256"]:
        raise CheckpointError(f"{path}: the weights do not match their stored SHA-256 (the file "
                              "is corrupt); retrain or re-download it")
    kind = payload["kind"]
    model = build_model(kind, payload["config"])
    _load_weights(model, payload["state_dict"], path)
    if payload.get("dae") is not None:
        dae = build_model("dae", payload["dae"]["config"])
        _load_weights(dae, payload["dae"]["state_dict"], path)
        model = DenoisedEstimator(dae, model)
    scaling = payload.get("label_scaling")
    return Checkpoint(kind=kind, model=model.eval(),
                      label_scaling=None if scaling is None else LabelScaling.from_dict(scaling),
                      temperature=payload.get("temperature"), data=payload.get("data") or {},
                      training=payload.get("training"), path=path, precision=_precision(states))
