"""Running engines over stars: rows, error rows, the resumable table, the text tables."""

from __future__ import annotations

import json
import math

import pytest

from photosphere._json import plain
from photosphere.benchmark.engines import Estimate
from photosphere.benchmark.report import star_table, summary_table
from photosphere.benchmark.run import COLUMNS, read_rows, run_benchmark
from photosphere.benchmark.stats import summarise
from photosphere.datasets.reference_stars import Star
from photosphere.errors import BenchmarkError, FileFormatError


def _star(name, teff, resolution=50000.0):
    return Star(star=name, file=f"{name}.txt", path=None, instrument="I", resolution=resolution,
                reference={"teff": (teff, 50.0), "logg": (4.4, 0.1), "feh": (0.0, 0.1)})


class Offset:
    """Returns the reference plus 120 K (σ 90 K), fails on stars named 'broken'."""

    name = "fake"

    def __init__(self):
        self.calls = []

    def __call__(self, star):
        self.calls.append(star.star)
        if star.star == "broken":
            raise FileFormatError("broken.txt: not a spectrum")
        ref = star.reference
        return Estimate({"teff": (ref["teff"][0] + 120.0, 90.0), "logg": (4.4, 0.05),
                         "feh": (-0.1, 0.05)}, resolution=2000.0, resolution_source="header",
                        chi2_reduced=1.2, flags=["at_node=logg"])


def _same(a, b) -> bool:
    """Equal as JSON (NaN == NaN)."""
    return json.dumps(plain(a)) == json.dumps(plain(b))


STARS = [_star("a", 5000.0), _star("broken", 6000.0), _star("c", 3500.0)]


def test_rows_error_rows_and_resume(tmp_path):
    out = tmp_path / "bench.ecsv"
    engine = Offset()
    rows = run_benchmark(STARS, [engine], out, progress=False)
    assert [r["status"] for r in rows] == ["ok", "error", "ok"]
    a, broken, _ = rows
    assert a["teff_diff"] == 120.0 and a["teff_z"] == pytest.approx(120.0 / math.hypot(90, 50))
    assert a["tier"] == "MILES" and a["resolution"] == 2000.0      # the header's R decides
    assert a["flags"] == "at_node=logg" and a["chi2_reduced"] == 1.2
    assert broken["message"] == "FileFormatError: broken.txt: not a spectrum"
    assert broken["tier"] == "FGK" and broken["resolution_source"] == "table"
    assert math.isnan(broken["teff"]) and broken["flags"] == "error"
    assert _same(read_rows(out), rows)
    doc = json.loads(out.with_suffix(".json").read_text())
    assert [r["star"] for r in doc["rows"]] == ["a", "broken", "c"]
    assert doc["rows"][1]["teff"] is None
    assert _same(doc["summary"], summarise(rows))
    again = Offset()
    rerun = run_benchmark(STARS, [again], out, progress=False)
    assert again.calls == ["broken"]             # finished stars are kept, errors retried
    assert _same(rerun[::2], rows[::2]) and rerun[1]["status"] == "error"
    other = Offset()
    run_benchmark(STARS[:1], [other], out, progress=False)
    assert other.calls == [] and len(read_rows(out)) == 3     # other stars stay in the file


def test_without_output_and_text_tables():
    rows = run_benchmark(STARS, [Offset()], progress=False)
    text = star_table(rows)
    assert text.splitlines()[0].split()[:4] == ["engine", "star", "tier", "Teff"]
    line_a = text.splitlines()[1]
    assert "5000±50" in line_a and "5120±90" in line_a and "+120" in line_a
    assert "+1.2" in line_a and "at_node=logg" in line_a
    assert "FileFormatError: broken.txt" in text.splitlines()[2]
    summary = summary_table(summarise(rows))
    assert "fake    all    Teff (K)      3 (1)           2  120       120         0%    100%" \
        in summary
    markdown = star_table(rows, markdown=True).splitlines()
    assert markdown[0].startswith("| engine | star | tier |") and markdown[1].startswith("|---|")
    markdown = summary_table(summarise(rows), markdown=True).splitlines()
    assert "| mean \\|Δ\\| |" in markdown[0]        # a pipe in a cell would split it


def test_output_mistakes_are_typed_errors(tmp_path):
    with pytest.raises(BenchmarkError, match=r"name it \*\.ecsv"):
        run_benchmark(STARS, [Offset()], tmp_path / "out.csv", progress=False)
    foreign = tmp_path / "foreign.ecsv"
    foreign.write_text("# %ECSV 1.0\n# ---\n# datatype:\n# - {name: x, datatype: int64}\nx\n1\n")
    with pytest.raises(BenchmarkError, match="not a benchmark table"):
        run_benchmark(STARS, [Offset()], foreign, progress=False)
    assert len(COLUMNS) == len(set(COLUMNS))
