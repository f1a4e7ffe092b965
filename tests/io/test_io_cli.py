"""`photosphere info` on spectra and auxiliary products; user mistakes exit 2 with a message."""

from __future__ import annotations

import json

import numpy as np
from io_fixtures import write_lblrtm, write_payne

from photosphere.cli import main


def test_info_text_spectrum_assumes_air_and_says_so(tmp_path, capsys):
    np.savetxt(tmp_path / "s.txt", np.c_[np.linspace(5000, 5010, 11), np.ones(11)])
    assert main(["info", str(tmp_path / "s.txt")]) == 0
    text = capsys.readouterr().out
    assert "medium:      air (ASSUMED" in text and "--medium" in text
    assert main(["info", str(tmp_path / "s.txt"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["medium"] == "air" and out["medium_assumed"] is True
    assert out["wavelength_min"] == 5000.0 and out["wavelength_unit"] == "Angstrom"
    assert out["wavelength_max"] == 5010.0 and out["product"] == "text"
    assert main(["info", str(tmp_path / "s.txt"), "--medium", "vacuum", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["medium"] == "vacuum" and out["medium_assumed"] is False
    assert "medium='vacuum'" in out["medium_source"]


def test_info_auxiliary_product_text_and_json(tmp_path, capsys):
    write_lblrtm(tmp_path / "apogee_lblrtm_CO2.fits")
    assert main(["info", str(tmp_path / "apogee_lblrtm_CO2.fits")]) == 0
    text = capsys.readouterr().out
    assert "not a spectrum" in text and "read_lblrtm_grid" in text
    assert main(["info", str(tmp_path / "apogee_lblrtm_CO2.fits"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kind"] == "auxiliary" and out["species"] == "CO2"
    assert out["wavelength_min"] == 15100.0


def test_info_payne_mask_reports_grid_range_from_companion(tmp_path, capsys):
    write_payne(tmp_path)
    np.savez(tmp_path / "apogee_mask.npz", apogee_mask=np.zeros(2920, bool))
    assert main(["info", str(tmp_path / "apogee_mask.npz"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["product"] == "payne_pixel_mask" and out["n_true"] == 0
    assert out["medium"] == "vacuum" and out["wavelength_min"] > 15000


def test_info_on_bad_files_exits_2_without_traceback(tmp_path, capsys):
    (tmp_path / "words.txt").write_text("hello world\nfoo bar\n")
    (tmp_path / "empty.fits").write_bytes(b"")
    for name, expected in (("words.txt", "no data rows"), ("empty.fits", "empty"),
                           ("missing.fits", "does not exist")):
        assert main(["info", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err
