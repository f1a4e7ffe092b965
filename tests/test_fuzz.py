"""Seeded fuzzing of the readers and the command-line options (hypothesis is not a dependency).

Files: random text tables, FITS tables and images, well-formed text spectra whose flux is zeros,
constants, noise, noise with cosmic rays, negative or NaN, truncated and corrupted copies, junk
bytes — none of them a star. Every one must end in a PhotosphereError (exit 2 on the CLI): never
a traceback, never labels. Options: random values for `fit`'s numeric options; the command must
either refuse them (exit 2) or reach the work, which a sentinel stops.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from photosphere import cli
from photosphere.errors import PhotosphereError
from photosphere.infer import batch
from photosphere.infer.batch import prepare_spectrum

N_FILES = 80
N_ARGV = 120
WORDS = ["wavelength", "flux", "sigma", "wave", "err", "lambda", "ivar", "medium: air",
         "medium: vacuum", "unit: nm", "x", ""]


def _column(rng, n, kinds=tuple(range(8))):
    kind = rng.choice(kinds)
    if kind == 0:
        return np.zeros(n)
    if kind == 1:
        return np.full(n, rng.choice([1.0, -1.0, np.nan, np.inf, 1e300]))
    if kind == 2:
        return rng.normal(rng.uniform(-2, 2), rng.uniform(0, 3), n)
    if kind == 3:
        return np.sort(rng.uniform(0, 2e4, n))
    if kind == 4:  # noise with a few cosmic-ray spikes: still not a star
        col = 1 + rng.normal(0, 0.02, n)
        if n:
            col[rng.integers(0, n, max(1, n // 100))] += rng.uniform(5, 500)
        return col
    if kind == 5:
        return rng.integers(-5, 5, n).astype(float)
    if kind == 6:
        return np.linspace(rng.uniform(1e3, 2e4), rng.uniform(1e3, 2e4), n)
    col = rng.normal(size=n)
    col[rng.random(n) < 0.3] = np.nan
    return col


def _text(rng, path):
    n = int(rng.choice([0, 1, 3, 10, 200, 2000]))
    cols = [_column(rng, n) for _ in range(int(rng.integers(1, 5)))]
    header = "\n".join(rng.choice(WORDS, size=int(rng.integers(0, 3))))
    np.savetxt(path, np.column_stack(cols) if n else np.empty((0, len(cols))), header=header)


def _plausible_layout(rng, path):
    """A well-formed text spectrum (air wavelengths in Å, flux, maybe σ) with nonsense flux."""
    n = int(rng.choice([5, 50, 500, 3000]))
    wave = np.linspace(5000.0, 5400.0, n)
    # no random walk (kind 3) as flux: wavy nonsense gets past the gate and is flagged after the
    # fit (χ²_red, labels at bounds; test_cli_checks), which this fast test does not run
    cols = [wave, _column(rng, n, kinds=(0, 1, 2, 4, 5, 6, 7))] + (
        [np.abs(_column(rng, n))] if rng.random() < 0.5 else [])
    names = "wavelength flux" + (" sigma" if len(cols) == 3 else "")
    instrument = f"\ninstrument: {rng.choice(['APOGEE', 'HARPS'])}" if rng.random() < 0.3 else ""
    np.savetxt(path, np.column_stack(cols), header=f"medium: air{instrument}\n{names}")


def _fits_table(rng, path):
    n = int(rng.choice([1, 10, 500, 3000]))
    names = rng.choice(["wavelength", "flux", "sigma", "WAVE", "FLUX", "ERR", "lam", "ivar"],
                       size=int(rng.integers(1, 4)), replace=False)
    cols = {}
    for name in names:
        if rng.random() < 0.2:
            cols[str(name)] = np.array([f"s{i}" for i in range(n)])  # a string column
        else:
            cols[str(name)] = _column(rng, n)
    Table(cols).write(path, overwrite=True)
    if rng.random() < 0.5:
        with fits.open(path, mode="update") as hdul:
            hdul[0].header["INSTRUME"] = str(rng.choice(["APOGEE", "HARPS", "TAPAS", "???"]))


def _fits_image(rng, path):
    shape = tuple(int(s) for s in rng.choice([1, 2, 8, 72, 4096], size=int(rng.integers(1, 4))))
    while np.prod(shape) > 2 ** 20:   # at most a few MB per file
        shape = shape[1:]
    data = rng.normal(size=shape) if rng.random() < 0.7 else np.zeros(shape)
    hdu = fits.PrimaryHDU(data)
    if rng.random() < 0.6:
        hdu.header.update(CRVAL1=float(rng.uniform(-10, 2e4)), CDELT1=float(rng.uniform(-1, 1)),
                          CRPIX1=1.0, CTYPE1=str(rng.choice(["WAVE", "AWAV", "LINEAR", "X"])))
    hdu.writeto(path, overwrite=True)


def _junk(rng, path, sources):
    kind = rng.integers(3)
    if kind == 0 or not sources:
        path.write_bytes(rng.bytes(int(rng.integers(0, 5000))))
    else:
        data = bytearray(sources[int(rng.integers(len(sources)))].read_bytes())
        if kind == 1:
            data = data[: int(rng.integers(0, max(len(data), 1)))]   # truncated
        else:
            for i in rng.integers(0, max(len(data), 1), 20):
                if i < len(data):
                    data[i] = int(rng.integers(256))                 # corrupted bytes
        path.write_bytes(bytes(data))


def fuzz_files(folder, seed=20261206, n=N_FILES):
    rng = np.random.default_rng(seed)
    files = []
    makers = [_text, _fits_table, _fits_image, _plausible_layout, _plausible_layout]
    for i in range(n):
        kind = int(rng.integers(len(makers) + 1))
        suffix = ".fits" if kind in (1, 2) else ".txt" if kind != len(makers) else \
            str(rng.choice([".fits", ".txt", ".csv", ".h5"]))
        path = folder / f"f{i:03d}{suffix}"
        if kind < len(makers):
            makers[kind](rng, path)
        else:
            _junk(rng, path, files)
        files.append(path)
    return files


def test_readers_never_crash_and_never_accept_nonsense(tmp_path):
    outcomes = {}
    for path in fuzz_files(tmp_path):
        try:
            spectrum = prepare_spectrum(str(path))
        except PhotosphereError as exc:
            outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1
            continue
        except Exception as exc:  # a traceback on the command line
            pytest.fail(f"{path.name}: {type(exc).__name__}: {exc}")
        pytest.fail(f"{path.name}: nonsense accepted as a star: {spectrum!r}")
    assert sum(outcomes.values()) == N_FILES


def test_nn_predict_on_fuzzed_files_exits_2(tmp_path, capsys, monkeypatch):
    from photosphere.nn import predict

    monkeypatch.setattr(predict, "predict_spectrum",
                        lambda *a, **k: pytest.fail("the network ran on nonsense"))
    for path in fuzz_files(tmp_path, seed=7, n=25):
        assert cli.main(["nn", "predict", str(path), "--json"]) == 2, path.name
        captured = capsys.readouterr()
        assert captured.out == "" and "Traceback" not in captured.err


OPTIONS = {
    "--resolution": "num", "--snr": "num", "--walkers": "int", "--steps": "int",
    "--workers": "int", "--clip": "num", "--continuum-degree": "int",
    "--wavelength-range": "num2", "--macroturbulence": "num", "--fix": "pair",
    "--initial": "pair", "--prior": "prior",
}
NUMBERS = ["0", "-1", "1", "2.5", "nan", "inf", "-inf", "1e308", "1e-300", "x", "", "50000",
           "5000", "3", "--", "1,5"]


def _argv(rng, path):
    argv = ["fit", path]
    for option in rng.choice(list(OPTIONS), size=int(rng.integers(1, 4)), replace=False):
        kind = OPTIONS[option]
        value = str(rng.choice(NUMBERS))
        if kind == "int" and rng.random() < 0.5:
            value = str(int(rng.integers(-3, 100)))
        if kind == "num2":
            argv += [option, value, str(rng.choice(NUMBERS))]
        elif kind == "pair":
            argv += [option, f"{rng.choice(['teff', 'logg', 'mass', ''])}={value}"]
        elif kind == "prior":
            argv += ["--mcmc", option,
                     f"{rng.choice(['vsini', 'logg', 'teff'])}={value}:{rng.choice(NUMBERS)}"]
        else:
            argv += [option, value]
    return argv


class Reached(PhotosphereError):
    """The options passed every check and the command reached the work."""


def test_fit_options_are_refused_or_reach_the_work(tmp_path, capsys, monkeypatch):
    def sentinel(*a, **k):
        raise Reached("reached the work")
    monkeypatch.setattr(batch, "prepare_spectrum", sentinel)
    monkeypatch.setattr(batch, "fit_many", sentinel)
    star = tmp_path / "star.txt"
    star.write_text("x")
    rng = np.random.default_rng(11)
    counts = {"refused": 0, "reached": 0}
    for _ in range(N_ARGV):
        argv = _argv(rng, str(star))
        try:
            code = cli.main(argv)
        except SystemExit as exc:        # argparse: usage error
            code = exc.code
        err = capsys.readouterr().err
        assert code == 2, f"{argv}: exit {code}"
        assert "Traceback" not in err
        counts["reached" if "reached the work" in err else "refused"] += 1
    assert counts["refused"] and counts["reached"]
