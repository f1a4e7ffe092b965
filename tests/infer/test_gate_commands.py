"""The validity gate in front of `lines fit` and `cannon test --spectrum` too."""

from __future__ import annotations

import numpy as np
import pytest

from photosphere import cli


def _flat(tmp_path):
    wave = np.linspace(6000.0, 6030.0, 600)
    path = tmp_path / "flat.txt"
    np.savetxt(path, np.column_stack([wave, np.ones_like(wave)]), header="medium: air")
    return str(path)


def test_lines_fit_refuses_a_flat_spectrum(tmp_path, capsys):
    rc = cli.main(["lines", "fit", _flat(tmp_path), "--lines", str(tmp_path / "none.ecsv")])
    assert rc == 2
    assert "the flux is constant" in capsys.readouterr().err


def test_cannon_test_refuses_a_flat_spectrum(tmp_path, capsys, monkeypatch):
    from photosphere.models import cannon
    from photosphere.workflows import cannon_apogee

    monkeypatch.setattr(cannon.CannonModel, "load", classmethod(lambda cls, path: object()))
    monkeypatch.setattr(cannon_apogee, "fit_real_spectrum",
                        lambda *a, **k: pytest.fail("the Cannon fitted a non-star"))
    rc = cli.main(["cannon", "test", "model.npz", "--n-test", "0", "--spectrum",
                   _flat(tmp_path)])
    assert rc == 2
    assert "the flux is constant" in capsys.readouterr().err
