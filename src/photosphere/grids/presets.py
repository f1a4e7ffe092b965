"""Grid definitions: the :class:`GridSpec` of a synthetic grid, named presets, user TOML/YAML files.

A grid is the Cartesian product of its label axes (``teff`` K, ``logg`` dex cgs, ``feh`` dex,
``alpha`` dex, ``vmic`` km/s); labels held at one value are ``fixed`` labels. The wavelengths are a
log-uniform (constant velocity step) grid between ``wavelength_min`` and ``wavelength_max`` (Å) in
``medium``.

Velocity step of the presets: 1.0 km/s. HARPS-N (R = 115 000) has an LSF of FWHM c/R = 2.61 km/s,
and the narrowest unbroadened metal lines at 4000-7000 K have a Doppler FWHM of about
1.665 * sqrt(2kT/m_Fe + vmic^2) = 2.6 km/s, so 1.0 km/s gives 2.6 samples per FWHM before and
3.7 after the LSF (Nyquist needs 2), and keeps the embedded grid under 20 MB.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DependencyError, GridError, MissingFileError

#: Labels a grid axis may carry, with their units (the one vocabulary of photosphere).
LABEL_UNITS = {"teff": "K", "logg": "dex (cgs)", "feh": "dex", "alpha": "dex", "vmic": "km/s"}
#: Defaults passed to the synthesizer for labels that are neither axes nor fixed.
LABEL_DEFAULTS = {"alpha": 0.0, "vmic": 1.0}
FLUX_ENCODINGS = ("float32", "uint16")


def _axis(lo: float, hi: float, step: float) -> tuple[float, ...]:
    n = round((hi - lo) / step) + 1
    return tuple(float(round(lo + i * step, 6)) for i in range(n))


@dataclass(frozen=True)
class GridSpec:
    """What a grid contains; enough to build it again.

    axes: ordered mapping label -> increasing node values (at least 2 per axis).
    fixed: labels held at one value for every node (e.g. ``{"alpha": 0.0, "vmic": 1.0}``).
    wavelength_min, wavelength_max: Å, in ``medium``; velocity_step: km/s of the stored grid.
    synthesis_step: Å, the linear step asked of the synthesizer (resampled onto the stored grid).
    n_chunks: number of equal-log-width wavelength chunks for the stored mean absolute flux.
    continuum_stride: the continuum is stored every ``continuum_stride`` pixels (it is smooth).
    flux_encoding: ``"float32"`` or ``"uint16"`` (quantised normalised flux, 0..flux_max, in
    steps of flux_max / (2**flux_bits - 1): at most half a step of error).
    """

    name: str
    axes: Mapping[str, tuple[float, ...]]
    wavelength_min: float
    wavelength_max: float
    velocity_step: float = 1.0
    fixed: Mapping[str, float] = field(default_factory=dict)
    medium: str = "air"
    atmosphere: str = "atlas9"
    synthesis_step: float = 0.01
    n_chunks: int = 8
    continuum_stride: int = 64
    flux_encoding: str = "float32"
    flux_max: float = 1.3
    flux_bits: int = 16

    def __post_init__(self) -> None:
        axes = {str(k): tuple(float(v) for v in vals) for k, vals in dict(self.axes).items()}
        fixed = {str(k): float(v) for k, v in dict(self.fixed).items()}
        object.__setattr__(self, "axes", axes)
        object.__setattr__(self, "fixed", fixed)
        where = f"grid {self.name!r}"
        if not axes:
            raise GridError(f"{where} has no label axes; give at least one axis such as teff")
        for name, vals in {**axes, **{k: (v,) for k, v in fixed.items()}}.items():
            if name not in LABEL_UNITS:
                raise GridError(f"{where}: unknown label {name!r}; use one of "
                                f"{', '.join(LABEL_UNITS)}")
            if not all(math.isfinite(v) for v in vals):
                raise GridError(f"{where}: label {name} has non-finite values {vals}")
        both = set(axes) & set(fixed)
        if both:
            raise GridError(f"{where}: {sorted(both)} given both as axes and as fixed labels")
        for name, vals in axes.items():
            if len(vals) < 2:
                raise GridError(f"{where}: axis {name} has {len(vals)} value(s); an axis needs at "
                                f"least 2 (put a single value under 'fixed')")
            if np.any(np.diff(vals) <= 0):
                raise GridError(f"{where}: axis {name} values {vals} must strictly increase")
        if not 0 < self.wavelength_min < self.wavelength_max:
            raise GridError(f"{where}: wavelength range {self.wavelength_min}-"
                            f"{self.wavelength_max} Å is empty or negative")
        if not 0 < self.velocity_step <= 100:
            raise GridError(f"{where}: velocity_step={self.velocity_step} km/s must be in (0, 100]")
        if self.medium not in ("air", "vacuum"):
            raise GridError(f"{where}: medium={self.medium!r}; use 'air' or 'vacuum'")
        if self.flux_encoding not in FLUX_ENCODINGS:
            raise GridError(f"{where}: flux_encoding={self.flux_encoding!r}; use one of "
                            f"{FLUX_ENCODINGS}")
        if not 8 <= self.flux_bits <= 16:
            raise GridError(f"{where}: flux_bits={self.flux_bits} must be 8..16")
        if self.n_chunks < 1 or self.continuum_stride < 1 or self.synthesis_step <= 0:
            raise GridError(f"{where}: n_chunks, continuum_stride and synthesis_step must be > 0")

    # ------------------------------------------------------------------ nodes
    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(self.axes)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.axes.values())

    @property
    def n_nodes(self) -> int:
        return int(np.prod(self.shape))

    def node_labels(self, index: int) -> dict[str, float]:
        """All labels of flat node ``index`` (C order over the axes), fixed ones and defaults."""
        idx = np.unravel_index(int(index), self.shape)
        labels = {**LABEL_DEFAULTS, **self.fixed}
        labels.update({name: vals[i] for (name, vals), i in zip(self.axes.items(), idx,
                                                                strict=True)})
        return labels

    def iter_nodes(self) -> Iterator[tuple[int, dict[str, float]]]:
        for i in range(self.n_nodes):
            yield i, self.node_labels(i)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["axes"] = {k: list(v) for k, v in self.axes.items()}
        return d

    def to_json(self) -> str:
        """JSON text; the axes keep their order (it defines the node order)."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], name: str | None = None) -> GridSpec:
        d = dict(d)
        if name is not None:
            d.setdefault("name", name)
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise GridError(f"grid definition has unknown key(s) {sorted(unknown)}; known keys: "
                            f"{sorted(known)}")
        for key in ("name", "axes", "wavelength_min", "wavelength_max"):
            if key not in d:
                raise GridError(f"grid definition lacks {key!r}; see docs/grids.md for an example")
        axes = {}
        for label, val in dict(d["axes"]).items():
            if isinstance(val, Mapping):
                try:
                    axes[label] = _axis(float(val["min"]), float(val["max"]), float(val["step"]))
                except KeyError as exc:
                    raise GridError(f"axis {label} needs min, max and step (missing {exc})") \
                        from None
            else:
                axes[label] = tuple(float(v) for v in val)
        d["axes"] = axes
        try:
            return cls(**d)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, GridError):
                raise
            raise GridError(f"grid definition is invalid: {exc}") from None

    @classmethod
    def from_json(cls, text: str) -> GridSpec:
        return cls.from_dict(json.loads(text))


def _harpsn_window(name: str, teff: tuple[float, float], logg: tuple[float, float],
                   feh: tuple[float, float], **encoding: Any) -> GridSpec:
    """An ATLAS9 grid over the HARPS-N window 5050-5350 Å (air) at 1 km/s, alpha 0, vmic 1 km/s;
    axes (min, max) with steps 250 K, 0.5 dex, 0.5 dex."""
    return GridSpec(
        name=name,
        axes={"teff": _axis(*teff, 250), "logg": _axis(*logg, 0.5), "feh": _axis(*feh, 0.5)},
        fixed={"alpha": 0.0, "vmic": 1.0},
        wavelength_min=5050.0, wavelength_max=5350.0, velocity_step=1.0, atmosphere="atlas9",
        **encoding)


PRESETS = {
    # 13-bit steps (error <= 7.9e-5) keep the shipped file near 16.5 MB: measured on a real
    # Turbospectrum grid, gzip+shuffle stores 1.36 bytes/pixel at 13 bits, 1.72 at 16
    "default": lambda: _harpsn_window("default", (4000, 7000), (1.0, 5.0), (-2.0, 0.5),
                                      flux_encoding="uint16", flux_bits=13),
    # the grid of the HARPS-N deep-learning study; vsini 0-30 km/s is applied by convolution
    "harpsn-dl": lambda: _harpsn_window("harpsn-dl", (3500, 9750), (0.0, 5.0), (-2.5, 0.5),
                                        flux_encoding="float32"),
}

#: The command that makes the embedded default grid (rerun it to regenerate the file).
DEFAULT_BUILD_COMMAND = "photosphere grid build --preset default"


def get_preset(name: str) -> GridSpec:
    """The :class:`GridSpec` of a named preset (``default``, ``harpsn-dl``)."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise GridError(f"unknown grid preset {name!r}; known presets: "
                        f"{', '.join(sorted(PRESETS))} (or pass a TOML/YAML grid file)") from None


def load_grid_spec(path: str | Path) -> GridSpec:
    """Read a user grid definition from a ``.toml``/``.yaml``/``.yml`` file (docs/grids.md)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"grid definition file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            data = tomllib.loads(path.read_text())
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:  # pragma: no cover - pyyaml comes with dask
                raise DependencyError("reading YAML grid files needs PyYAML: pip install pyyaml") \
                    from None
            data = yaml.safe_load(path.read_text())
        else:
            raise GridError(f"grid definition {path} must end in .toml, .yaml or .yml")
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        if isinstance(exc, GridError):
            raise
        raise GridError(f"grid definition {path} cannot be parsed: {exc}") from None
    if not isinstance(data, Mapping):
        raise GridError(f"grid definition {path} must be a mapping of keys, got {type(data)}")
    return GridSpec.from_dict(data, name=path.stem)


def resolve_spec(preset_or_path: str | Path | GridSpec) -> GridSpec:
    """A GridSpec from a spec, a preset name, or a TOML/YAML file path."""
    if isinstance(preset_or_path, GridSpec):
        return preset_or_path
    text = str(preset_or_path)
    if text in PRESETS:
        return get_preset(text)
    if Path(text).suffix.lower() in (".toml", ".yaml", ".yml"):
        return load_grid_spec(text)
    return get_preset(text)


def default_grid_path() -> Path:
    """The embedded default grid, ``photosphere/data/grids/default.h5`` (may not exist yet)."""
    return Path(__file__).resolve().parents[1] / "data" / "grids" / "default.h5"


def require_default_grid() -> Path:
    """The embedded default grid path, or a GridError naming the command that builds it."""
    path = default_grid_path()
    if not path.is_file():
        raise GridError(f"the embedded default grid {path} is not built in this installation; "
                        f"run `{DEFAULT_BUILD_COMMAND}` (needs Turbospectrum) or pass a grid file")
    return path
