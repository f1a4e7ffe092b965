"""A correction table learned on a star becomes a calibrated Turbospectrum line list."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from photosphere.errors import ModelError
from photosphere.grids.synth.linelists import read_linelist
from photosphere.models.lines.calibrate import calibrate_linelist

LIST = """'  26.000            '    1         3
'Fe I    LTE'
  5051.280  0.915 -2.764 1063.0    9.0  1.0E+08 'x' 'x'   0.0    1.0 'Fe I a'
  5051.285  4.500 -1.000 1063.0    9.0  1.0E+08 'x' 'x'   0.0    1.0 'Fe I b'
  5100.000  2.000 -1.500 1063.0    9.0  1.0E+08 'x' 'x'   0.0    1.0 'Fe I c'
'  27.000            '    1         1
'Co I    LTE'
  5343.400  4.000 -0.500 1063.0    9.0  1.0E+08 'x' 'x'   0.0    1.0 'Co I d'
"""


def test_corrections_go_to_the_dominant_list_line(tmp_path):
    source = tmp_path / "list.txt"
    source.write_text(LIST)
    corrections = Table({"centre_initial": [5051.282, 5343.401, 5200.0, 5100.001],
                         "delta_log_amplitude": [-0.5, 0.9, 0.3, 0.2],
                         "observed": [True, True, True, True],
                         "vanished": [False, False, False, True]})
    result = calibrate_linelist(source, corrections, tmp_path / "out.txt")
    assert result.n_corrections == 3  # the vanished one is not used
    assert result.n_changed == 2  # 5200 Å matches nothing
    species = read_linelist(str(tmp_path / "out.txt"))
    log_gf = {float(r.split()[0]): float(r.split()[2]) for sp in species for r in sp.rows}
    # 5051.280 (χ 0.9 eV) dominates its 4.5 eV neighbour at solar temperature
    assert log_gf[5051.280] == pytest.approx(-3.264)
    assert log_gf[5051.285] == pytest.approx(-1.000)
    assert log_gf[5343.400] == pytest.approx(0.400)
    assert log_gf[5100.000] == pytest.approx(-1.500)
    np.testing.assert_allclose(sorted(result.delta_log_gf), [-0.5, 0.9])
    # the rest of each row is unchanged
    assert read_linelist(str(source))[0].rows[0].split()[3:] == species[0].rows[0].split()[3:]


def test_a_table_without_corrections_is_a_clear_error(tmp_path):
    (tmp_path / "list.txt").write_text(LIST)
    with pytest.raises(ModelError, match="delta_log_amplitude"):
        calibrate_linelist(tmp_path / "list.txt", Table({"centre_initial": [5051.0]}),
                           tmp_path / "out.txt")
