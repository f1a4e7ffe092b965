"""The HDF5 grid store: layout, round trip of spectra, provenance, and errors on bad files."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from _analytic import build_small, small_spec, synthesize

from photosphere.errors import GridError, MissingFileError
from photosphere.grids import _sampling
from photosphere.grids.presets import GridSpec
from photosphere.grids.store import GridStore, hdf5_format


@pytest.fixture(scope="module")
def grid_path(tmp_path_factory):
    return build_small(tmp_path_factory.mktemp("grid") / "small.h5")


def test_layout_and_info(grid_path):
    with GridStore.open(grid_path) as store:
        info = store.info()
        assert store.label_names == ("teff", "logg", "feh")
        assert store.shape == (4, 3, 2)
        assert info["labels"]["teff"] == {"min": 5500.0, "max": 7000.0, "step": 500.0, "n": 4,
                                          "unit": "K"}
        lo, hi = info["wavelength_range"]
        assert lo <= 5160.0 and hi >= 5200.0 and hi < 5200.1
        assert info["medium"] == "air" and info["velocity_step"] == 1.0
        v = np.log(store.wavelength[1:] / store.wavelength[:-1]) * _sampling.C_KMS
        np.testing.assert_allclose(v, 1.0, rtol=1e-6)
        # the analytic synthesizer has no model for teff 7000 / logg 1: two missing nodes
        assert info["n_missing"] == 2 and info["n_present"] == 22
        assert store.missing[3, 0].all() and not store.present[3, 0].any()
        assert info["provenance"]["linelist_sha256"] == "0" * 64
        assert info["provenance"]["atmosphere_family"] == "atlas9"
        assert info["provenance"]["command"] == "test"
        with h5py.File(grid_path) as f:
            assert f["flux"].chunks == (1, store.n_pix)
            assert f["flux"].compression == "gzip" and f["flux"].shuffle


def test_stored_spectra_match_the_synthesizer(grid_path):
    with GridStore.open(grid_path) as store:
        node = (1, 2, 0)
        labels = store.node_labels(node)
        syn = synthesize(labels["teff"], labels["logg"], labels["feh"], wavelength_min=5159.0,
                         wavelength_max=5201.0)
        expected_abs = _sampling.rebin(syn.wavelength, syn.flux_absolute, store.wavelength)
        expected_cont = _sampling.rebin(syn.wavelength, syn.continuum, store.wavelength)
        np.testing.assert_allclose(store.flux(node), expected_abs / expected_cont, atol=1e-6)
        np.testing.assert_allclose(store.absolute_flux(node), expected_abs, rtol=2e-6)
        # the reduced continuum is smooth: its recorded error is small and honest
        err = np.max(np.abs(store.continuum(node) / expected_cont - 1))
        assert err <= store.attribute("continuum.max_relative_error") + 1e-7
        assert err < 1e-5
        mean = store.mean_flux_all()[store.node_index(node)]
        edges = store.chunk_edges
        first = (store.wavelength >= edges[0]) & (store.wavelength < edges[1])
        np.testing.assert_allclose(mean[0], expected_abs[first].mean(), rtol=1e-6)
        with pytest.raises(GridError, match="no spectrum"):
            store.flux((3, 0, 1))


def test_uint16_encoding_error_is_bounded_and_recorded(tmp_path, grid_path):
    path = build_small(tmp_path / "q.h5", flux_encoding="uint16", flux_bits=13)
    with GridStore.open(path) as q, GridStore.open(grid_path) as f:
        diff = np.nanmax(np.abs(q.flux_all() - f.flux_all()))
        recorded = q.info()["quantisation_max_error"]
        assert 1.3 / 8191 / 2 * 0.5 < recorded <= 1.3 / 8191 / 2 + 1e-12
        assert diff <= recorded + 1e-6
        assert q.path.stat().st_size < f.path.stat().st_size


def test_missing_file_partial_and_not_a_grid(tmp_path):
    with pytest.raises(MissingFileError, match="does not exist"):
        GridStore.open(tmp_path / "nope.h5")
    partial = tmp_path / "x.h5.partial"
    partial.mkdir()
    with pytest.raises(GridError, match="unfinished grid build"):
        GridStore.open(partial)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = 1
    with pytest.raises(GridError, match="not a photosphere grid"):
        GridStore.open(other)


def test_truncated_and_corrupt_files_give_grid_error(tmp_path, grid_path):
    data = grid_path.read_bytes()
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(GridError, match="corrupt"):
        GridStore.open(trunc)
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not hdf5 at all" * 100)
    with pytest.raises(GridError, match="cannot be opened as HDF5"):
        GridStore.open(garbage)
    incomplete = tmp_path / "incomplete.h5"
    incomplete.write_bytes(data)
    with h5py.File(incomplete, "r+") as f:
        f.attrs["complete"] = False
    with pytest.raises(GridError, match="incomplete"):
        GridStore.open(incomplete)


def test_spec_round_trip_and_validation():
    spec = small_spec()
    assert GridSpec.from_json(spec.to_json()) == spec
    assert spec.n_nodes == 24
    assert spec.node_labels(0) == {"teff": 5500.0, "logg": 1.0, "feh": -1.0, "alpha": 0.0,
                                   "vmic": 1.0}
    with pytest.raises(GridError, match="unknown label 'mass'"):
        small_spec(axes={"mass": (1.0, 2.0)})
    with pytest.raises(GridError, match="at least 2"):
        small_spec(axes={"teff": (5000.0,)})
    with pytest.raises(GridError, match="strictly increase"):
        small_spec(axes={"teff": (6000.0, 5000.0)})


def test_subset_keeps_the_chosen_nodes_exactly(tmp_path, grid_path):
    with GridStore.open(grid_path) as store:
        out = store.subset(tmp_path / "sub.h5", teff=[5500.0, 6500.0])
        with GridStore.open(out) as sub:
            assert sub.shape == (2, 3, 2)
            np.testing.assert_array_equal(sub.flux((1, 2, 1)), store.flux((2, 2, 1)))
            np.testing.assert_array_equal(sub.present, store.present[[0, 2]])
            assert sub.provenance["subset_of"] == str(grid_path)
        q = store.subset(tmp_path / "q.h5", flux_encoding="uint16")
        with GridStore.open(q) as sub:
            assert sub.info()["flux_encoding"] == "uint16"
            err = np.nanmax(np.abs(sub.flux_all() - store.flux_all()))
            assert err <= sub.info()["quantisation_max_error"] + 1e-7
        with pytest.raises(GridError, match=r"teff values \[5600.0\] are not nodes"):
            store.subset(tmp_path / "bad.h5", teff=[5500.0, 5600.0])


def test_hdf5_format_names_the_kind_of_file_or_none(tmp_path):
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f.attrs["format"] = "photosphere-emulator"
    with h5py.File(tmp_path / "b.h5", "w") as f:
        f.attrs["format"] = b"photosphere-grid"  # written as bytes by an older h5py
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f.create_dataset("x", data=[1.0])
    (tmp_path / "d.h5").write_text("not HDF5")
    assert hdf5_format(tmp_path / "a.h5") == "photosphere-emulator"
    assert hdf5_format(tmp_path / "b.h5") == "photosphere-grid"
    assert hdf5_format(tmp_path / "c.h5") is None
    assert hdf5_format(tmp_path / "d.h5") is None
    assert hdf5_format(tmp_path / "missing.h5") is None
