"""Grids are validated at open, carry a content checksum, and are built by one process at a time."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
from _analytic import build_small, small_spec, synthesize

from photosphere import cli
from photosphere._lock import file_lock
from photosphere.errors import BusyError, GridError
from photosphere.grids.build import build_grid
from photosphere.grids.store import GridStore


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return build_small(tmp_path_factory.mktemp("grid") / "small.h5", flux_encoding="uint16")


def _edited(small, tmp_path, edit):
    path = tmp_path / "edited.h5"
    shutil.copy(small, path)
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


def _set_teff_duplicate(f):
    teff = f["labels/teff"][:]
    teff[1] = teff[0]
    f["labels/teff"][...] = teff


@pytest.mark.parametrize("edit, match", [
    (_set_teff_duplicate, "teff is not strictly increasing.*duplicated"),
    (lambda f: f["labels/logg"].__setitem__(slice(None), [3.0, 2.0, 1.0]), "out of order"),
    (lambda f: f["flux"].attrs.__setitem__("scale_factor", np.nan), "scale_factor nan"),
    (lambda f: f["flux"].attrs.__setitem__("add_offset", np.inf), "add_offset inf"),
    (lambda f: f.attrs.__setitem__("format_version", 99), "format version 99, newer than"),
    (lambda f: f.attrs.__delitem__("format_version"), "declares no valid format version"),
])
def test_broken_grids_are_refused_at_open(small, tmp_path, edit, match):
    path = _edited(small, tmp_path, edit)
    with pytest.raises(GridError, match=match):
        GridStore(path)


def test_checksum_written_at_build_detects_changed_flux(small, tmp_path, capsys):
    with GridStore(small) as store:
        assert store.verify()["checksum"] == "ok"
    assert cli.main(["grid", "info", str(small), "--check"]) == 0
    assert "content checksum ok" in capsys.readouterr().out

    def noise(f):
        flux = f["flux"][:]
        flux[3] = np.random.default_rng(0).integers(0, 60000, flux.shape[1])
        f["flux"][...] = flux

    damaged = _edited(small, tmp_path, noise)
    GridStore(damaged).close()  # the structure is fine: only the checksum sees it
    assert cli.main(["grid", "info", str(damaged), "--check"]) == 2
    assert "does not match the checksum" in capsys.readouterr().err


def test_a_grid_without_checksum_says_so(small, tmp_path, capsys):
    path = _edited(small, tmp_path, lambda f: f.attrs.__delitem__("content_sha256"))
    assert cli.main(["grid", "info", str(path), "--check", "--json"]) == 0
    assert '"checksum": "absent"' in capsys.readouterr().out


def test_a_second_build_of_the_same_output_refuses(tmp_path):
    out = tmp_path / "g.h5"
    with file_lock(out, wait=False, what="grid"):  # a build of out is running
        with pytest.raises(BusyError, match="being written by another photosphere process"):
            build_grid(small_spec(), out, synthesizer=synthesize, scheduler="synchronous",
                       progress=False)
    assert not out.exists()
    assert not (tmp_path / "g.h5.partial").exists()   # nothing was synthesised


def test_the_embedded_grid_is_checked_against_its_shipped_checksum(tmp_path, monkeypatch,
                                                                  capsys):
    """The shipped grid predates checksums (and its bytes are pinned by the networks' grid
    digests): its content checksum ships in the package, so damage to it is seen too."""

    from photosphere.grids import presets
    from photosphere.grids.store import DEFAULT_GRID_CONTENT_SHA256

    with GridStore(presets.default_grid_path()) as store:
        assert store.verify() == {"checksum": "ok",
                                  "content_sha256": DEFAULT_GRID_CONTENT_SHA256}
    copy = tmp_path / "default.h5"
    shutil.copy(presets.default_grid_path(), copy)
    with h5py.File(copy, "r+") as f:
        f["flux"][5, :100] = 17
    monkeypatch.setattr(presets, "default_grid_path", lambda: copy)
    assert cli.main(["grid", "info", "--check"]) == 2
    assert "does not match the checksum" in capsys.readouterr().err
