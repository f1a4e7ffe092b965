"""`photosphere benchmark` on a tiny stars folder: two spectra made by the embedded grid with known
labels, and a file that does not read."""

from __future__ import annotations

import json

import numpy as np
import pytest

from photosphere import cli
from photosphere.infer.batch import load_grid_model

TRUTH = {"dwarf.txt": (5800.0, 4.3, -0.2), "giant.txt": (4750.0, 2.5, -0.5)}


@pytest.fixture(scope="module")
def stars_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stars")
    model = load_grid_model()
    wave = np.linspace(5180.0, 5230.0, 500)
    rng = np.random.default_rng(20261206)
    lines = ["file,star,instrument,resolution,teff,teff_err,logg,logg_err,feh,feh_err,vsini,"
             "label_source,notes"]
    for name, (teff, logg, feh) in TRUTH.items():
        flux = model.observe(model.labels_tensor(teff=teff, logg=logg, feh=feh), vsini=3.0,
                             resolution=25000.0, wavelength=wave).numpy()
        sigma = np.full(wave.size, 0.01)
        np.savetxt(folder / name, np.column_stack([wave, flux + rng.normal(0, 0.01, wave.size),
                                                   sigma]),
                   header="medium: air\nwavelength flux sigma")
        lines.append(f"{name},{name[:-4]},synthetic,25000,{teff},50,{logg},0.1,{feh},0.05,3,"
                     "embedded grid,")
    (folder / "broken.txt").write_text("this is not a spectrum\n")
    lines.append("broken.txt,broken,synthetic,25000,5000,50,4.5,0.1,0,0.05,,none,unreadable")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.mark.slow
def test_benchmark_fit_writes_table_json_and_figure(stars_dir, tmp_path, capsys):
    out, fig = tmp_path / "bench.ecsv", tmp_path / "bench.png"
    code = cli.main(["benchmark", str(stars_dir), "--engine", "fit", "-o", str(out),
                     "--plot", str(fig), "--json", "--no-progress"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    rows = {r["star"]: r for r in doc["rows"]}
    assert [rows[s]["status"] for s in ("dwarf", "giant", "broken")] == ["ok", "ok", "error"]
    assert rows["dwarf"]["tier"] == "FGK" and rows["giant"]["tier"] == "giant"
    assert rows["dwarf"]["resolution"] == 25000.0
    assert rows["broken"]["message"].startswith("FileFormatError")
    for star in ("dwarf", "giant"):     # the grid made these spectra: recovered within 3σ_total
        for label in ("teff", "logg", "feh"):
            assert abs(rows[star][f"{label}_z"]) < 3, (star, label, rows[star])
    summary = {(s["tier"], s["label"]): s for s in doc["summary"]}
    assert summary[("all", "teff")]["n_stars"] == 3 and summary[("all", "teff")]["n"] == 2
    assert summary[("all", "teff")]["n_errors"] == 1
    assert out.exists() and fig.stat().st_size > 0
    assert json.loads(out.with_suffix(".json").read_text())["rows"][0]["star"] == "dwarf"
    code = cli.main(["benchmark", str(stars_dir), "--stars", "giant", "-o", str(out)])
    text = capsys.readouterr().out
    assert code == 0 and "giant" in text and "dwarf" not in text
    assert "mean |Δ|" in text and f"written: {out}" in text
    code = cli.main(["benchmark", str(stars_dir), "--tier", "giant", "-o", str(out),
                     "--markdown", "--no-progress"])
    text = capsys.readouterr().out.splitlines()
    assert code == 0 and text[0].startswith("| engine | star | tier | Teff ref |")
    assert text[2].startswith("| fit | giant | giant | 4750±50 |")
    # the rerun reuses the table; the floor is measured on the other stars of each tier: one
    # star per tier here, so no floor can be measured and σ stay the engine's own
    code = cli.main(["benchmark", str(stars_dir), "-o", str(out), "--systematic-floor",
                     "--json", "--no-progress"])
    rows = {r["star"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    assert code == 0 and rows["dwarf"]["teff_sigma_sys"] is None   # NaN is null in JSON
    assert rows["dwarf"]["teff_sigma"] == rows["dwarf"]["teff_sigma_stat"]


def test_benchmark_user_mistakes_exit_2(stars_dir, tmp_path, capsys):
    assert cli.main(["benchmark", str(tmp_path / "nowhere")]) == 2
    assert "no labels table" in capsys.readouterr().err
    assert cli.main(["benchmark", str(stars_dir), "--stars", "vega"]) == 2
    assert "'vega' matches no star" in capsys.readouterr().err
    assert cli.main(["benchmark", str(stars_dir), "-o", str(tmp_path / "x.json")]) == 2
    assert "name it *.ecsv" in capsys.readouterr().err
