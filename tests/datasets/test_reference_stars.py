"""The labels table, the tier rule and star selection."""

from __future__ import annotations

import pytest

from photosphere.datasets.reference_stars import TIERS, read_stars, select, tier_of
from photosphere.errors import BenchmarkError

HEADER = ("file,star,instrument,resolution,teff,teff_err,logg,logg_err,feh,feh_err,vsini,"
          "label_source,notes\n")


@pytest.mark.parametrize(("teff", "logg", "feh", "resolution", "tier"), [
    (5772, 4.44, 0.0, 115000, "FGK"),
    (4000, 4.5, -1.5, 20000, "FGK"),          # every bound of the FGK box is inside it
    (7000, 3.5, 0.3, 47000, "FGK"),
    (5772, 4.44, 0.0, 19999, "MILES"),        # low resolution wins over everything
    (3228, 5.09, -0.4, 2200, "MILES"),
    (3228, 5.09, -0.4, 60000, "M dwarf"),
    (3999, 4.0, -2.0, 60000, "M dwarf"),      # M dwarf before metal-poor
    (6463, 4.26, -3.29, 35000, "metal-poor"),
    (4630, 1.0, -2.95, 35000, "metal-poor"),  # a metal-poor giant is metal-poor
    (3927, 1.11, -0.37, 115000, "giant"),     # a cool giant is a giant, not an M dwarf
    (4941, 3.49, -0.24, 60000, "giant"),
    (7500, 4.0, 0.0, 60000, "other"),
    (3900, 3.8, 0.0, 60000, "other"),
])
def test_tier_rule(teff, logg, feh, resolution, tier):
    assert tier_of(teff, logg, feh, resolution) == tier
    assert tier in TIERS


def _table(tmp_path, body):
    path = tmp_path / "labels.csv"
    path.write_text(HEADER + body)
    return path


def test_read_stars_resolves_files_and_reads_labels(tmp_path):
    path = _table(tmp_path, "a/sun.txt,Sun,UVES,80000,5772,20,4.44,0.02,0.0,0.05,,IAU,\n"
                            "../elsewhere/x.fits,Gl 15 B,MILES,2200,3218,60,5.07,0.05,-0.3,0.08,"
                            "1.5,Mann,\"flux, calibrated\"\n")
    sun, gl = read_stars(path)
    assert sun.path == tmp_path / "a" / "sun.txt"
    assert sun.reference == {"teff": (5772.0, 20.0), "logg": (4.44, 0.02), "feh": (0.0, 0.05)}
    assert sun.vsini is None and sun.tier() == "FGK"
    assert gl.path == tmp_path / "../elsewhere/x.fits" and gl.vsini == 1.5
    assert gl.notes == "flux, calibrated" and gl.tier() == "MILES"
    assert gl.tier(resolution=50000) == "M dwarf"


def test_bad_tables_are_typed_errors(tmp_path):
    with pytest.raises(BenchmarkError, match="no labels table"):
        read_stars(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("file,star\nx,y\n")
    with pytest.raises(BenchmarkError, match="lacks the columns"):
        read_stars(bad)
    path = _table(tmp_path, "x.txt,X,I,80000,hot,20,4.4,0.1,0,0.1,,,\n")
    with pytest.raises(BenchmarkError, match="line 2: column 'teff' is 'hot'"):
        read_stars(path)


def test_select_by_name_tier_and_limit(tmp_path):
    path = _table(tmp_path, "sun.txt,Sun,UVES,80000,5772,20,4.44,0.02,0.0,0.05,,,\n"
                            "gl.txt,Gl 15 B,IDS,2200,3218,60,5.07,0.05,-0.3,0.08,,,\n"
                            "hd.txt,HD 1,HIRES,60000,4941,50,3.0,0.1,-0.2,0.05,,,\n")
    stars = read_stars(path)
    assert [s.star for s in select(stars, ["gl", "SUN"])] == ["Sun", "Gl 15 B"]
    assert [s.star for s in select(stars, tier="giant")] == ["HD 1"]
    assert [s.star for s in select(stars, limit=2)] == ["Sun", "Gl 15 B"]
    with pytest.raises(BenchmarkError, match="'Vega' matches no star"):
        select(stars, ["Vega"])
    with pytest.raises(BenchmarkError, match="tier 'dwarf' is not known"):
        select(stars, tier="dwarf")
    with pytest.raises(BenchmarkError, match="--limit 0"):
        select(stars, limit=0)
