"""Driver unit tests without the binaries: input files, line-list windows, result parsing."""

from __future__ import annotations

import numpy as np
import pytest

from photosphere.errors import FileFormatError, OutOfGridError
from photosphere.grids.synth import linelists
from photosphere.grids.synth import turbospectrum as ts
from photosphere.grids.synth.atmospheres import Atmosphere

LINELIST = """\
'  12.000            '    1         3
'Mg I    LTE'
  5167.321  2.709 -0.870   -7.270    3.0  1.00E+08 'p' 'd'   0.0    1.0 'Mg I 1'
  5172.684  2.712 -0.393   -7.270    3.0  1.00E+08 'p' 'd'   0.0    1.0 'Mg I 2'
  6000.000  2.712 -0.393   -7.270    3.0  1.00E+08 'p' 'd'   0.0    1.0 'Mg I 3'
'  26.000            '    2         2
'Fe II   LTE'
  5169.028  2.891 -1.000   -7.880    6.0  2.00E+08 'x' 'x'   0.0    1.0 'Fe II 1'
  7000.000  2.891 -1.000   -7.880    6.0  2.00E+08 'x' 'x'   0.0    1.0 'Fe II 2'
'  14.000            '    1         1
'Si I    LTE'
  8000.000  5.000 -1.000   -7.000    3.0  1.00E+08 'x' 'x'   0.0    1.0 'Si I'
"""


def _atmosphere(family="atlas9", spherical=False):
    return Atmosphere(family, 5750.0, 4.5, 0.0, 0.0, 2.0, ("TEFF   5750.",), ("node",),
                      spherical)


def test_babsma_input_has_every_keyword():
    text = ts.babsma_input("model.atm", "model.opac", _atmosphere(), 5045.0, 5355.0, 1.0,
                           -0.5, 0.2, 1.3)
    lines = text.splitlines()
    assert "'LAMBDA_MIN:' '5045.000'" in lines and "'LAMBDA_MAX:' '5355.000'" in lines
    assert "'MODELINPUT:' 'model.atm'" in lines and "'MARCS-FILE:' '.false.'" in lines
    assert "'METALLICITY:' '-0.500'" in lines and "'ALPHA/Fe   :' '0.200'" in lines
    assert "'INDIVIDUAL ABUNDANCES:' '0'" in lines
    assert lines[-2:] == ["'XIFIX:' 'T'", "1.300"]


def test_bsyn_input_lists_files_and_geometry():
    text = ts.bsyn_input("m.atm", "m.opac", "out.txt", ["DATA/Hlinedata", "lines.txt"],
                         _atmosphere("marcs", spherical=True), 5170.0, 5175.0, 0.01, 0.0, 0.4)
    lines = text.splitlines()
    assert "'PURE-LTE  :' '.true.'" in lines and "'INTENSITY/FLUX:' 'Flux'" in lines
    assert "'MARCS-FILE:' '.true.'" in lines and "'RESULTFILE :' 'out.txt'" in lines
    i = lines.index("'NFILES   :' '2'")
    assert lines[i + 1:i + 3] == ["DATA/Hlinedata", "lines.txt"]
    assert "'SPHERICAL:' 'T'" in lines and "'LAMBDA_STEP:' '0.0100'" in lines
    assert "'ALPHA/Fe   :' '0.400'" in lines


def test_linelist_window_recounts_species(tmp_path):
    src = tmp_path / "ges.txt"
    src.write_text(LINELIST)
    dest = tmp_path / "win.txt"
    n = linelists.write_window(src, 5170.0, 5175.0, dest, margin=5.0)
    assert n == 3
    out = dest.read_text().splitlines()
    assert out[0] == "'  12.000            '    1         2"
    assert out[3].split()[0] == "5172.684"
    assert out[4] == "'  26.000            '    2         1"
    assert "Si I" not in dest.read_text()
    assert len(linelists.sha256(src)) == 64


def test_linelist_errors(tmp_path):
    src = tmp_path / "bad.txt"
    src.write_text("'  12.000  '    1     5\n'Mg I'\n  5172.684  2.7 -0.4\n")
    with pytest.raises(FileFormatError, match="promises 5"):
        linelists.read_linelist(str(src))
    with pytest.raises(OutOfGridError, match="4200-9200"):
        linelists.write_window(src, 3000.0, 3100.0, tmp_path / "x.txt")


def test_read_result_and_continuum(tmp_path):
    wave = np.arange(5170.0, 5171.0, 0.01)
    cont = 1e7 * (1 + 1e-4 * (wave - 5170.0))
    norm = 1.0 - 0.99 * np.exp(-0.5 * ((wave - 5170.5) / 0.05) ** 2)
    path = tmp_path / "spec.txt"
    np.savetxt(path, np.column_stack([wave, norm, norm * cont]), fmt="%.4f %.6f %.6e")
    w, f, a = ts.read_result(path)
    np.testing.assert_allclose(w, wave, atol=1e-4)
    c = ts.continuum_from(f, a, w)
    np.testing.assert_allclose(c, cont, rtol=1e-5)
    with pytest.raises(ts.TurbospectrumError, match="no spectrum"):
        ts.read_result(tmp_path / "missing.txt")


def test_family_choice_and_argument_errors():
    assert ts.choose_family(5772, 4.44, 0.0, "auto") == "marcs"
    assert ts.choose_family(9000, 4.0, 0.0, "auto") == "atlas9"
    assert ts.choose_family(5772, 4.44, -3.0, "auto") == "atlas9"
    with pytest.raises(OutOfGridError, match="'kurucz'"):
        ts.choose_family(5772, 4.44, 0.0, "kurucz")
    with pytest.raises(OutOfGridError, match="wavelength_min"):
        ts.synthesize(5772, 4.44, 0.0, wavelength_min=5200, wavelength_max=5100)
    with pytest.raises(OutOfGridError, match="4200-9200"):
        ts.synthesize(5772, 4.44, 0.0, wavelength_min=15000, wavelength_max=15100)
    with pytest.raises(OutOfGridError, match="vmic"):
        ts.synthesize(5772, 4.44, 0.0, vmic=-1, wavelength_min=5100, wavelength_max=5110)


def test_synthetic_spectrum_is_frozen_and_checked():
    w = np.linspace(5000, 5001, 5)
    s = ts.SyntheticSpectrum(w, np.ones(5), np.ones(5), np.ones(5), {"teff": 5000.0})
    with pytest.raises(ValueError, match="read-only"):
        s.flux[0] = 2.0
    with pytest.raises(FileFormatError, match="continuum"):
        ts.SyntheticSpectrum(w, np.ones(5), np.ones(5), np.ones(4), {})
