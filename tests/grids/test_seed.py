"""Training-set seeds: the spectra a build has made, shipped compressed; builds start from them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _analytic import synthesize
from test_training_set import _killed_build, small

from photosphere.errors import GridError
from photosphere.grids import seed, training_set
from photosphere.grids.build import Journal, build_grid
from photosphere.grids.training_set import TrainingSet, built_nodes, read_built


@pytest.fixture
def preset(tmp_path, monkeypatch):
    """A small preset 'test-ts' (12 spectra, 6 built and journalled at ``out``) with its seed
    at a temporary path."""
    monkeypatch.setitem(training_set.TRAINING_PRESETS, "test-ts", lambda: small(n_samples=12))
    where = tmp_path / "package" / "test-ts-seed.h5"
    where.parent.mkdir()
    monkeypatch.setattr(seed, "seed_path", lambda name: where)
    out = tmp_path / "ts.h5"
    _killed_build(small(n_samples=12), out, n_done=6)
    return out, where


def test_a_seed_round_trips_the_journal_to_the_quantisation_step(preset):
    out, where = preset
    spec, nodes = built_nodes("test-ts", out)
    assert len(nodes) == 6
    seed.write_seed(where, spec, nodes)
    spec_json, back = seed.read_seed(where)
    assert spec_json == spec.to_json()
    assert [n.index for n in back] == [n.index for n in nodes]
    for a, b in zip(nodes, back, strict=True):
        assert a.missing == b.missing and a.atmosphere_id == b.atmosphere_id
        if not a.missing:
            step = seed.FLUX_MAX / seed._LEVELS
            np.testing.assert_allclose(b.flux, a.flux, rtol=0, atol=0.51 * step)
            np.testing.assert_array_equal(b.continuum, a.continuum)
            assert b.provenance == json.loads(json.dumps(a.provenance, default=str))


def test_a_build_starts_from_the_seed_and_synthesises_only_the_rest(preset, tmp_path,
                                                                    monkeypatch):
    out, where = preset
    spec, nodes = built_nodes("test-ts", out)
    seed.write_seed(where, spec, nodes)
    fresh = tmp_path / "fresh.h5"
    log = tmp_path / "calls.txt"
    monkeypatch.setenv("PHOTOSPHERE_TEST_CALL_LOG", str(log))
    report = build_grid(small(n_samples=12), fresh, synthesizer=synthesize,
                        scheduler="synchronous", progress=False, seed=where)
    assert report.n_reused == 6 and report.n_computed == 6
    assert len(log.read_text().splitlines()) == 6 * 2  # one synthesis per window
    assert TrainingSet(fresh).flux.shape[0] == 12


def test_read_built_adds_the_seed_to_the_journal(preset, tmp_path):
    out, where = preset
    spec, nodes = built_nodes("test-ts", out)
    seed.write_seed(where, spec, nodes[:4])
    elsewhere = tmp_path / "elsewhere.h5"  # no journal there: the seed alone
    labels, flux, wave, _, planned = read_built("test-ts", elsewhere)
    assert flux.shape == (4, len(wave))
    assert planned == 12 and len(labels) == 4
    np.testing.assert_allclose(labels, spec.labels[[n.index for n in nodes[:4]]])
    labels, _, _, _, _ = read_built("test-ts", out)  # the journal's 6 and the seed's 4 overlap
    assert len(labels) == 6


def test_a_seed_of_another_definition_is_never_mixed_in(preset, tmp_path, capsys):
    out, where = preset
    other = small(n_samples=12, seed=99)  # other labels: another training set
    seed.write_seed(where, other, built_nodes("test-ts", out)[1])
    journal = Journal(tmp_path / "new.h5", small(n_samples=12))
    assert seed.seed_journal(journal, where) == 0
    assert "another definition" in capsys.readouterr().err
    assert journal.done() == set()
    assert built_nodes("test-ts", tmp_path / "none.h5")[1] == []


def test_a_damaged_or_foreign_seed_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5 at all")
    with pytest.raises(GridError, match="not a training-set seed"):
        seed.read_seed(bad)
    with pytest.raises(GridError, match="no spectra"):
        seed.write_seed(tmp_path / "empty.h5", small(), [])


def test_the_seed_command_writes_the_journal_so_far(preset, tmp_path, capsys, monkeypatch):
    from photosphere import cli

    cache = tmp_path / "cache"
    monkeypatch.setattr("photosphere._files.cache_dir", lambda *parts: cache)
    _killed_build(small(n_samples=12), cache / "test-ts.h5", n_done=6)
    target = tmp_path / "exported.h5"
    assert cli.main(["grid", "seed", "--preset", "test-ts", "-o", str(target), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_spectra"] + summary["n_missing"] == 6 and summary["n_planned"] == 12
    assert len(seed.read_seed(target)[1]) == 6


def test_a_finished_build_seeds_every_spectrum(preset, tmp_path, monkeypatch, capsys):
    """Once the build is finished its journal is gone: the seed is written from the file."""
    from photosphere import cli

    _, where = preset
    cache = tmp_path / "cache"
    monkeypatch.setattr("photosphere._files.cache_dir", lambda *parts: cache)
    finished = cache / "test-ts.h5"
    build_grid(small(n_samples=12), finished, synthesizer=synthesize, scheduler="synchronous",
               progress=False)
    assert cli.main(["grid", "seed", "--preset", "test-ts", "-o", str(where), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_spectra"] + summary["n_missing"] == 12
    ts = TrainingSet(finished)
    _, back = seed.read_seed(where)
    step = seed.FLUX_MAX / seed._LEVELS
    kept = [n for n in back if not n.missing]
    np.testing.assert_allclose(np.stack([n.flux for n in kept]), ts.flux, rtol=0,
                               atol=0.51 * step)
    report = build_grid(small(n_samples=12), tmp_path / "again.h5", synthesizer=synthesize,
                        scheduler="synchronous", progress=False, seed=where)
    assert report.n_reused == 12 and report.n_computed == 0
    np.testing.assert_allclose(TrainingSet(tmp_path / "again.h5").flux, ts.flux, rtol=0,
                               atol=0.51 * step)
