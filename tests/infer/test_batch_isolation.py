"""Batches never lose a result: per-file errors become rows, concurrent runs merge, outputs and
plot paths are checked before the fit, exit codes count the failures."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from astropy.table import Table
from test_batch import FIT, _write, read_npz, small_model

from photosphere import cli
from photosphere.errors import BusyError
from photosphere.infer import batch
from photosphere.infer.batch import _Table, fit_many, read_table, rows_of

SRC = Path(__file__).resolve().parents[2] / "src"


def read_or_crash(path: str):
    """A reader that raises an ordinary Python error (not a PhotosphereError) on one file."""
    if "crash" in path:
        raise TypeError("unsupported operand type(s) for +: 'float' and 'str'")
    return read_npz(path)


@pytest.mark.slow
def test_a_python_error_in_one_file_becomes_a_row_and_the_rest_run(tmp_path):
    _write(tmp_path, "a_crash.npz", seed=0)  # first in order: on main it ended the batch
    _write(tmp_path, "b_star.npz", seed=1)
    out = tmp_path / "results.ecsv"
    kw = dict(reader=read_or_crash, fit_kwargs=FIT, processes=False, progress=False,
              n_workers=1)
    table = fit_many([str(tmp_path / "*.npz")], functools.partial(small_model), out, **kw)
    rows = {Path(r["source"]).name: r for r in rows_of(table)}
    assert rows["a_crash.npz"]["status"].startswith("error: TypeError: unsupported operand")
    assert rows["b_star.npz"]["status"] == "ok"
    assert rows["b_star.npz"]["warnings"] == ""
    # the rerun retries the failure and keeps the finished row
    table = fit_many([str(tmp_path / "*.npz")], functools.partial(small_model), out, **kw)
    assert len(table) == 2


def test_results_table_updates_merge_rows_of_another_run(tmp_path):
    out = tmp_path / "results.ecsv"
    run_a, run_b = _Table(out), _Table(out)  # two runs opened the same table
    run_a.put({"source": "a1", "status": "ok", "teff": 5800.0})
    run_b.put({"source": "b1", "status": "ok", "teff": 5700.0})
    run_a.put({"source": "a2", "status": "ok", "teff": 5600.0})
    run_b.put({"source": "a1", "status": "ok", "teff": 5801.0})  # same file: replaced, once
    rows = {r["source"]: r["teff"] for r in read_table(out)}
    assert rows == {"a1": 5801.0, "b1": 5700.0, "a2": 5600.0}


def test_a_corrupt_results_table_is_a_clear_error(tmp_path):
    out = tmp_path / "results.ecsv"
    out.write_text("not a table\x00\x01")
    from photosphere.errors import FileFormatError

    with pytest.raises(FileFormatError, match="not a readable ECSV table"):
        read_table(out)


def test_workers_must_be_positive(tmp_path):
    from photosphere.errors import FitError

    _write(tmp_path, "a.npz", seed=0)
    with pytest.raises(FitError, match="n_workers=0"):
        fit_many([str(tmp_path / "a.npz")], small_model, tmp_path / "r.ecsv", n_workers=0)


_RUN = textwrap.dedent("""
    import functools, sys, time
    sys.path[:0] = [{tests!r}, {infer!r}]
    import test_batch
    from photosphere.infer.batch import fit_many

    def slow_reader(path):
        time.sleep(1.5)
        return test_batch.read_npz(path)

    fit_many(sys.argv[2:], functools.partial(test_batch.small_model), sys.argv[1],
             reader=slow_reader, fit_kwargs=test_batch.FIT, processes=False, progress=False,
             n_workers=1)
""")


@pytest.mark.slow
def test_two_concurrent_runs_on_one_table_lose_no_row(tmp_path):
    files = [str(_write(tmp_path, f"s{i}.npz", seed=i)) for i in range(4)]
    script = tmp_path / "run.py"
    tests = str(Path(__file__).resolve().parents[1])
    script.write_text(_RUN.format(tests=tests, infer=str(Path(__file__).parent)))
    out = str(tmp_path / "results.ecsv")
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), out, *files[k::2]], env=env,
                              stderr=subprocess.PIPE) for k in (0, 1)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()[-2000:]
    table = read_table(out)
    assert sorted(table["source"]) == sorted(files)   # on main: 2 of 4 rows survived
    assert all(s == "ok" for s in table["status"])


# ---------------------------------------------------------------------------- the CLI
def _fake_fit_many(rows):
    def fake(files, factory, output, **kw):
        t = Table(rows=[[r[k] for k in ("source", "status", "warnings")] for r in rows],
                  names=("source", "status", "warnings"))
        t.write(output, format="ascii.ecsv", overwrite=True)
        return t
    return fake


def test_batch_exit_code_counts_the_failed_files(tmp_path, monkeypatch, capsys):
    files = [tmp_path / f"{n}.txt" for n in ("a", "b", "c")]
    for f in files:
        f.write_text("x")
    rows = [{"source": str(files[0]), "status": "ok", "warnings": ""},
            {"source": str(files[1]), "status": "error: TypeError: boom", "warnings": ""},
            {"source": str(files[2]), "status": "error: no pixel", "warnings": ""}]
    monkeypatch.setattr(batch, "fit_many", _fake_fit_many(rows))
    code = cli.main(["fit", *map(str, files), "-o", str(tmp_path / "r.ecsv"), "--json"])
    assert code == 12   # 10 + 2 failed files (on main: 0)
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["n_failed"] == 2 and doc["n_ok"] == 1
    assert "2 of 3 file(s) failed" in captured.err


def test_batch_with_flagged_rows_exits_3_unless_allowed(tmp_path, monkeypatch, capsys):
    f = tmp_path / "a.txt"
    f.write_text("x")
    rows = [{"source": str(f), "status": "ok", "warnings": "teff at a bound of the model"}]
    monkeypatch.setattr(batch, "fit_many", _fake_fit_many(rows))
    assert cli.main(["fit", str(f), "-o", str(tmp_path / "r.ecsv")]) == 3
    assert "warning:" in capsys.readouterr().err
    assert cli.main(["fit", str(f), "-o", str(tmp_path / "r.ecsv"), "--allow-flagged"]) == 0


@pytest.mark.parametrize("output, match", [
    ("{tmp}/nonexistent/dir/x.ecsv", "does not exist; create it first"),
    ("{tmp}", "is a folder"),
    ("{tmp}/results.csv", "must end in .ecsv"),
])
def test_outputs_are_checked_before_anything_runs(tmp_path, monkeypatch, capsys, output, match):
    f = tmp_path / "a.txt"
    f.write_text("x")
    monkeypatch.setattr(batch, "fit_many", lambda *a, **k: pytest.fail("the fit ran"))
    assert cli.main(["fit", str(f), "-o", output.format(tmp=tmp_path)]) == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "nonexistent").exists()   # on main: the folders were created


@pytest.mark.parametrize("option", ["--plot", "--corner"])
@pytest.mark.parametrize("path, match", [
    ("{tmp}/missing/fit.png", "does not exist"),
    ("{tmp}/fit.notanimage", "must end in"),
])
def test_plot_paths_are_checked_before_the_fit(tmp_path, monkeypatch, capsys, option, path,
                                               match):
    f = tmp_path / "a.txt"
    f.write_text("x")
    monkeypatch.setattr(batch, "prepare_spectrum", lambda *a, **k: pytest.fail("read"))
    assert cli.main(["fit", str(f), option, path.format(tmp=tmp_path)]) == 2
    assert match in capsys.readouterr().err


def test_a_second_writer_of_a_locked_output_refuses(tmp_path):
    from photosphere._lock import file_lock

    out = tmp_path / "grid.h5"
    with file_lock(out, wait=False, what="grid"):
        with pytest.raises(BusyError, match=f"pid {os.getpid()}"):
            with file_lock(out, wait=False, what="grid"):
                pass
    with file_lock(out, wait=False, what="grid"):  # released: free again
        pass


def test_files_claimed_by_a_live_run_are_left_to_it_and_a_dead_runs_claims_are_taken(
        tmp_path):
    """Two batches on one table never fit the same file twice: a file another live process
    has claimed is skipped (listed in meta["busy"]); the claims of a process that is gone
    (killed) do not count."""
    files = [str(_write(tmp_path, f"s{i}.npz", seed=i)) for i in range(3)]
    out = tmp_path / "results.ecsv"
    live = os.getppid()                                   # the parent of this test: alive
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    claims = tmp_path / ".results.ecsv.claims.json"
    claims.write_text(json.dumps({files[0]: live, files[1]: int(dead)}))
    kw = dict(reader=read_npz, fit_kwargs=FIT, processes=False, progress=False, n_workers=1)
    table = fit_many(files, functools.partial(small_model), out, **kw)
    assert table.meta["busy"] == {files[0]: live}
    assert sorted(table["source"]) == sorted(files[1:])  # the dead run's file was retaken
    # our own claims are released when the batch ends; the live one stays
    assert json.loads(claims.read_text()) == {files[0]: live}
    claims.unlink()
    table = fit_many(files, functools.partial(small_model), out, **kw)
    assert table.meta["busy"] == {} and sorted(table["source"]) == sorted(files)
    assert not claims.exists()


def test_the_command_says_which_files_another_run_is_fitting(tmp_path, monkeypatch, capsys):
    def fake(files, factory, output, **kw):
        t = Table(rows=[["a.fits", "ok", ""]], names=("source", "status", "warnings"))
        t.write(output, format="ascii.ecsv", overwrite=True)
        t.meta["busy"] = {"b.fits": 4242}
        return t

    monkeypatch.setattr(batch, "fit_many", fake)
    for name in ("a.fits", "b.fits"):
        (tmp_path / name).write_text("x")
    monkeypatch.chdir(tmp_path)
    code = cli.main(["fit", "a.fits", "b.fits", "-o", "results.ecsv", "--json"])
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert code == 0 and doc["busy"] == {"b.fits": 4242}
    assert "being fitted by another photosphere run" in captured.err and "4242" in captured.err
