"""The lab's real-APOGEE path on generated DR17-format files: allStar cuts -> apStar lookup or
download -> bitmask -> pseudo-continuum -> train/validation split -> train and test (CLI)."""

from __future__ import annotations

import functools
import http.server
import json
import socket
import threading

import numpy as np
import pytest
from _allstar_fixtures import LAB_COLUMNS, aspcap_index, write_lab_sample

from photosphere.cli import main
from photosphere.errors import MissingFileError, NetworkError
from photosphere.models.cannon import CannonModel
from photosphere.workflows.cannon_allstar import (
    AllStarSpec,
    load_stars,
    normalised_apstar,
    train_on_allstar,
)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return write_lab_sample(tmp_path_factory.mktemp("allstar"))


def _spec(sample, **kw) -> AllStarSpec:
    return AllStarSpec(str(sample["allstar"]), str(sample["apstar_dir"]),
                       str(sample["continuum"]), **kw)


def test_selection_applies_the_lab_cuts(sample):
    table = _spec(sample).select()
    assert len(table) == 60
    assert table.meta["selection"]["n_in"] == 65
    assert not any(str(i).startswith("2M999999") for i in table["APOGEE_ID"])


def test_apstar_is_masked_by_bitmask_and_pseudo_continuum_normalised(sample):
    row = sample["good"][0]
    path = sample["apstar_dir"] / f"apStar-dr17-{row['APOGEE_ID']}.fits"
    pixels = np.load(sample["continuum"])
    wave, flux, ivar = normalised_apstar(path, pixels)
    assert wave.size == 7214
    # flagged pixels (bits 0 and 12, flux set to 5e4) carry no weight; bit 9 alone is kept
    from astropy.io import fits

    with fits.open(path) as hdul:
        bits = hdul[3].data.astype(np.int64)[aspcap_index()]
    flagged = (bits & ((1 << 0) | (1 << 12))) != 0
    assert flagged.sum() > 10 and np.all(ivar[flagged] == 0)
    assert np.all(ivar[(bits & (1 << 9)) != 0] > 0)
    # after the per-chip pseudo-continuum the spectrum is the toy normalised spectrum
    truth = sample["toy"].normalised(np.array([row[c] for c in LAB_COLUMNS]), wave)[0]
    good = ivar > 0
    pull = (flux[good] - truth[good]) * np.sqrt(ivar[good])
    assert abs(np.mean(pull)) < 0.1 and np.std(pull) == pytest.approx(1.0, abs=0.1)


def test_train_and_test_on_the_allstar_sample_via_the_cli(sample, tmp_path, capsys):
    """The toy line depths are linear in the labels and there are only 48 training stars, so
    the test trains a linear Cannon (6 terms); a quadratic one (21 terms) is under-determined
    by 48 stars in 5 labels (held-out leverages up to 2.5) and generalises 3x worse."""
    model_path = tmp_path / "lab.h5"
    assert main(["cannon", "train", "--allstar", str(sample["allstar"]), "--apstar-dir",
                 str(sample["apstar_dir"]), "--continuum-pixels", str(sample["continuum"]),
                 "--order", "1", "-o", str(model_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["label_names"] == ["teff", "logg", "feh", "mg_fe", "si_fe"]
    assert out["n_training_stars"] == 48 and out["n_pixels"] == 7214
    assert len(out["training_set"]["validation_ids"]) == 12
    assert not set(out["training_set"]["validation_ids"]) & set(
        out["training_set"]["training_ids"])
    assert main(["cannon", "test", str(model_path), "--json"]) == 0
    validation = json.loads(capsys.readouterr().out)["validation"]
    assert validation["kind"] == "apogee_allstar" and validation["n"] == 12
    stats = validation["labels"]
    # labels span 1400 K, 2.8, 1.2, 0.4, 0.4 dex: recovered to 2-3 % of their range
    assert stats["teff"]["scatter"] < 40 and abs(stats["teff"]["bias"]) < 20
    assert stats["logg"]["scatter"] < 0.12 and stats["feh"]["scatter"] < 0.05
    assert stats["mg_fe"]["scatter"] < 0.02 and stats["si_fe"]["scatter"] < 0.02
    assert CannonModel.load(model_path).provenance_["training_set"]["selection"]["n_out"] == 60


def test_missing_apstar_files_name_the_path_and_the_download_option(sample, tmp_path):
    spec = AllStarSpec(str(sample["allstar"]), str(tmp_path / "empty"), str(sample["continuum"]))
    with pytest.raises(MissingFileError, match=r"2 of 2 selected stars .*no apStar file for 2M.*"
                                               r"--download"):
        load_stars(spec, [0, 1])


def test_download_offline_fails_at_once_with_a_clear_message(sample, tmp_path):
    with socket.socket() as s:            # a port nothing listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = AllStarSpec(str(sample["allstar"]), str(tmp_path / "cache"), str(sample["continuum"]),
                       download=True, base_url=f"http://127.0.0.1:{port}/stars")
    with pytest.raises(NetworkError, match=r"unreachable.*place it at"):
        train_on_allstar(spec)


def test_download_fetches_the_dr17_layout_from_a_server(sample, tmp_path):
    """apStar files served as on the SAS (TELESCOPE/FIELD/apStar-dr17-ID.fits) are downloaded
    into the same layout under --apstar-dir and then used."""
    served = tmp_path / "sas"
    for row in sample["good"][:3]:
        folder = served / "apo25m" / row["FIELD"]
        folder.mkdir(parents=True, exist_ok=True)
        name = f"apStar-dr17-{row['APOGEE_ID']}.fits"
        (folder / name).write_bytes((sample["apstar_dir"] / name).read_bytes())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        spec = AllStarSpec(str(sample["allstar"]), str(tmp_path / "cache"),
                           str(sample["continuum"]), download=True,
                           base_url=f"http://127.0.0.1:{httpd.server_address[1]}")
        data, _ = load_stars(spec, [0, 1, 2])
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert data.flux.shape == (3, 7214)
    row = sample["good"][0]
    assert (tmp_path / "cache" / "apo25m" / row["FIELD"] /
            f"apStar-dr17-{row['APOGEE_ID']}.fits").is_file()


@pytest.mark.slow
def test_report_on_an_allstar_model(sample, tmp_path, capsys):
    model = train_on_allstar(_spec(sample), order=1)
    path = model.save(tmp_path / "lab.h5")
    outdir = tmp_path / "report"
    assert main(["cannon", "report", str(path), "-o", str(outdir), "--nn-epochs", "2",
                 "--mcmc-steps", "30", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_training"] == 48 and summary["n_validation"] == 12
    assert {"gradient_spectra", "cross_validation", "kiel_diagram", "mcmc_corner",
            "nn_cross_validation", "table"} <= set(summary["files"])
    assert set(summary["cannon"]) == {"teff", "logg", "feh", "mg_fe", "si_fe"}
