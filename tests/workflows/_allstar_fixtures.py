"""Tiny DR17 allStar + apStar files for the Cannon allStar workflow (seeded, generated).

Each star's combined apStar spectrum (8 575 px, log10 λ = 4.179 + 6e-6 i, 1e-17 erg/s/cm²/Å)
is a smooth per-chip continuum times a normalised spectrum of Gaussian lines whose depths are
linear in the five lab labels, with noise at the catalogue S/N and APOGEE bitmask bits set on a
few pixels (whose flux is then garbage, as flagged pixels are). Line-free pixels are the
continuum-pixel list.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

N_APSTAR = 8575
LAB_COLUMNS = ("TEFF", "LOGG", "FE_H", "MG_FE", "SI_FE")
#: label box of the generated stars (inside the lab's cuts)
BOX = {"TEFF": (4200.0, 5600.0), "LOGG": (1.0, 3.8), "FE_H": (-0.9, 0.3), "MG_FE": (-0.1, 0.3),
       "SI_FE": (-0.1, 0.3)}


def apstar_wavelength() -> np.ndarray:
    return 10.0 ** (4.179 + 6e-6 * np.arange(N_APSTAR))


def aspcap_index() -> np.ndarray:
    return np.concatenate([np.arange(322, 3242), np.arange(3648, 6048), np.arange(6412, 8306)])


class ToyApogee:
    """Normalised toy spectra: 90 lines, depth = a + b · (scaled labels)."""

    def __init__(self, seed: int = 11):
        rng = np.random.default_rng(seed)
        wave = apstar_wavelength()[aspcap_index()]
        self.centres = np.sort(rng.uniform(wave[0] + 5, wave[-1] - 5, 90))
        self.base = rng.uniform(0.1, 0.3, 90)
        self.slopes = rng.uniform(-0.08, 0.08, (90, 5))
        self.width = 0.35  # Å

    def normalised(self, labels: np.ndarray, wave: np.ndarray) -> np.ndarray:
        """(n, 5) labels (allStar units) -> (n, n_pix) normalised flux on ``wave`` (Å)."""
        lo = np.array([BOX[c][0] for c in LAB_COLUMNS])
        hi = np.array([BOX[c][1] for c in LAB_COLUMNS])
        x = (np.atleast_2d(labels) - lo) / (hi - lo) - 0.5
        depth = np.clip(self.base + x @ self.slopes.T, 0.01, 0.9)          # (n, 90)
        near = np.abs(wave[:, None] - self.centres) < 6 * self.width
        rows, cols = np.nonzero(near)
        profile = np.exp(-0.5 * ((wave[rows] - self.centres[cols]) / self.width) ** 2)
        out = np.ones((depth.shape[0], wave.size))
        np.add.at(out.T, rows, -(depth[:, cols] * profile).T)
        return out

    def continuum_pixels(self) -> np.ndarray:
        """(7214,) bool: ASPCAP pixels farther than 5 line widths from every line."""
        wave = apstar_wavelength()[aspcap_index()]
        far = np.min(np.abs(wave[:, None] - self.centres), axis=1) > 5 * self.width
        keep = np.zeros(wave.size, bool)
        keep[np.flatnonzero(far)[::3]] = True
        return keep


def write_apstar_file(path: Path, apogee_id: str, flux: np.ndarray, error: np.ndarray,
                      bitmask: np.ndarray, field: str, snr: float) -> None:
    """One-visit DR17 apStar layout: HDU1 flux, HDU2 error, HDU3 bitmask (1D, 8575 px)."""
    h0 = fits.Header()
    h0["OBJID"] = apogee_id
    h0["TELESCOP"] = "apo25m"
    h0["FIELD"] = field
    h0["NVISITS"] = 1
    h0["SNR"] = snr
    hdus = [fits.PrimaryHDU(header=h0)]
    for data in (flux.astype(np.float32), error.astype(np.float32), bitmask.astype(np.int16)):
        h = fits.Header()
        h["CRVAL1"], h["CDELT1"], h["CRPIX1"] = 4.179, 6e-6, 1
        hdus.append(fits.ImageHDU(data, header=h))
    fits.HDUList(hdus).writeto(path)


def write_lab_sample(folder: Path, n_good: int = 60, seed: int = 5) -> dict:
    """``allStar.fits`` with ``n_good`` stars passing the lab's cuts plus rejects, an
    ``apstar/`` folder with the good stars' files, and ``continuum.npy``. Returns the paths,
    the toy model and the good stars' table."""
    rng = np.random.default_rng(seed)
    toy = ToyApogee()
    fields = ("M15", "N6791", "K2_C4_168-21", "060+00")
    labels = np.column_stack([rng.uniform(*BOX[c], n_good) for c in LAB_COLUMNS])
    ids = [f"2M{i:08d}+{i:07d}" for i in range(n_good)]
    good = Table({"APOGEE_ID": ids, "FIELD": [fields[i % 4] for i in range(n_good)],
                  "TELESCOPE": ["apo25m"] * n_good,
                  **{c: labels[:, k] for k, c in enumerate(LAB_COLUMNS)},
                  "SNR": rng.uniform(150, 300, n_good),
                  "ASPCAPFLAG": np.zeros(n_good, np.int64),
                  "EXTRATARG": np.zeros(n_good, np.int32)})
    rejects = Table(rows=[
        ("2M99999901+9999901", "M15", "apo25m", 4800.0, 2.0, -0.3, 0.1, 0.1, 30.0, 0, 0),
        ("2M99999902+9999902", "120+12", "apo25m", 4800.0, 2.0, -0.3, 0.1, 0.1, 150.0, 0, 0),
        ("2M99999903+9999903", "M15", "apo25m", 6000.0, 2.0, -0.3, 0.1, 0.1, 150.0, 0, 0),
        ("2M99999904+9999904", "N6791", "apo25m", 4800.0, 2.0, -0.3, -9999.0, 0.1, 150.0, 0,
         0),
        ("2M99999905+9999905", "N6791", "apo25m", 4800.0, 2.0, -1.5, 0.1, 0.1, 150.0, 0, 0),
    ], names=good.colnames)
    rejects["ASPCAPFLAG"] = rejects["ASPCAPFLAG"].astype(np.int64)
    rejects["EXTRATARG"] = rejects["EXTRATARG"].astype(np.int32)
    from astropy.table import vstack

    table = vstack([good, rejects])
    allstar = folder / "allStar.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(table)]).writeto(allstar)

    apstar_dir = folder / "apstar"
    apstar_dir.mkdir()
    wave = apstar_wavelength()
    chip = np.select([wave < 15810, wave < 16440], [0, 1], 2)
    normalised = toy.normalised(labels, wave)
    for i in range(n_good):
        norm = normalised[i]
        tilt = (wave - 16000.0) / 1000.0
        continuum = 1e3 * (1.0 + 0.3 * chip) * (1 + 0.2 * tilt - 0.1 * tilt**2)
        sigma = continuum / good["SNR"][i]
        flux = norm * continuum + sigma * rng.normal(size=wave.size)
        bitmask = np.zeros(wave.size, np.int64)
        bad = rng.choice(np.arange(400, 8200), 40, replace=False)
        bitmask[bad[:20]] = 1 << 0           # BADPIX
        bitmask[bad[20:]] = 1 << 12          # SIG_SKYLINE
        flux[bad] = 5e4                     # garbage where flagged
        bitmask[bad[:5] + 1] |= 1 << 9       # PERSIST_HIGH: informational, kept
        write_apstar_file(apstar_dir / f"apStar-dr17-{ids[i]}.fits", ids[i], flux, sigma,
                          bitmask, good["FIELD"][i], float(good["SNR"][i]))
    continuum_path = folder / "continuum.npy"
    np.save(continuum_path, toy.continuum_pixels())
    return {"allstar": allstar, "apstar_dir": apstar_dir, "continuum": continuum_path,
            "toy": toy, "good": good}
