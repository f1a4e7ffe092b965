"""Writers of small files in the real product layouts, for reader tests (seeded, tiny).

Layouts follow the published data models: SDSS DR17 apStar / apVisit / allStar, HARPS DRS
e2ds + wave + blaze and s1d, PHOENIX-ACES HiRes flux + WAVE, the Starfish TRES HDF5 layout,
The Payne's .npz files, TAPAS .ipac, TelFit .csv and the APOGEE LBLRTM cubes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

APSTAR_NWAVE = 8575


def apstar_log_wavelength(n: int = APSTAR_NWAVE) -> np.ndarray:
    return 10.0 ** (4.179 + 6e-6 * np.arange(n))


def write_apstar(path: Path, n_visits: int = 3, seed: int = 1,
                 apogee_id: str = "2M00000002+7417074") -> dict:
    """A DR17 apStar file: HDU0 header; HDU1 flux, HDU2 error, HDU3 bitmask, HDU4 sky,
    HDU5 sky error, HDU6 telluric, HDU7 telluric error (all (n_visits + 2, 8575) when
    n_visits > 1, combined rows first; 1D when n_visits == 1), HDU8 LSF, HDU9 visit table."""
    rng = np.random.default_rng(seed)
    n_rows = n_visits + 2 if n_visits > 1 else 1
    flux = 100.0 + rng.normal(0, 1, (n_rows, APSTAR_NWAVE)).astype(np.float32)
    flux += np.arange(n_rows)[:, None] * 10.0  # each row distinguishable
    error = np.full_like(flux, 1.0)
    bitmask = np.zeros(flux.shape, np.int16)
    bitmask[:, 100] = 1 << 0  # BADPIX: masked
    bitmask[:, 200] = 1 << 9  # PERSIST_HIGH: informational, kept
    bitmask[:, 300] = 1 << 12  # SIG_SKYLINE: masked
    error[:, 400] = 1e10  # pipeline's "bad pixel" error
    flux[:, :5] = 0.0  # chip-gap style zeros with zero error
    error[:, :5] = 0.0
    if n_visits == 1:
        flux, error, bitmask = flux[0], error[0], bitmask[0]
    h0 = fits.Header()
    h0["OBJID"] = apogee_id
    h0["TELESCOP"] = "apo25m"
    h0["FIELD"] = "120+12"
    h0["NVISITS"] = n_visits
    h0["SNR"] = 123.4
    h0["VHELIO"] = -12.5
    h0["VSCATTER"] = 0.2
    for v in range(1, n_visits + 1):
        h0[f"SFILE{v}"] = f"apVisit-dr17-1234-5800{v}-101.fits"
        h0[f"VHELIO{v}"] = -12.5 + 0.1 * v
        h0[f"SNRVIS{v}"] = 70.0
    hdus = [fits.PrimaryHDU(header=h0)]
    for data, bunit in ((flux, "Flux (10^-17 erg/s/cm^2/Ang)"),
                        (error, "Err (10^-17 erg/s/cm^2/Ang)"), (bitmask, "Flag mask"),
                        (flux * 0.01, "Sky"), (error * 0.01, "Sky error"),
                        (np.ones_like(flux), "Telluric"), (error * 0.0, "Telluric error")):
        h = fits.Header()
        h["CRVAL1"] = 4.179
        h["CDELT1"] = 6e-6
        h["CRPIX1"] = 1
        h["CTYPE1"] = "LOG-LINEAR"
        h["DC-FLAG"] = 1
        h["BUNIT"] = bunit
        hdus.append(fits.ImageHDU(data, header=h))
    hdus.append(fits.ImageHDU(np.zeros((n_visits, 20), np.float32)))  # LSF coefficients
    visits = Table({"VHELIO": np.linspace(-12.4, -12.2, n_visits),
                    "SNR": np.full(n_visits, 70.0),
                    "FILE": [f"apVisit-{v}.fits" for v in range(n_visits)]})
    hdus.append(fits.BinTableHDU(visits))
    fits.HDUList(hdus).writeto(path)
    return {"flux": flux, "error": error, "bitmask": bitmask}


def write_apvisit(path: Path, seed: int = 2) -> dict:
    """An apVisit file: chips a, b, c (red to blue) as rows, each with decreasing wavelength."""
    rng = np.random.default_rng(seed)
    starts = np.array([16955.0, 16435.0, 15810.0])
    wave = starts[:, None] - 0.12 * np.arange(4096)[None, :]
    flux = (50 + rng.normal(0, 1, (3, 4096))).astype(np.float32)
    error = np.full_like(flux, 0.5)
    mask = np.zeros((3, 4096), np.int16)
    mask[0, 10] = 1 << 1  # CRPIX on chip a, file pixel 10
    h0 = fits.Header()
    h0["OBJID"] = "2M01183798+8403419"
    h0["TELESCOP"] = "apo25m"
    h0["FIBERID"] = 128
    h0["MJD5"] = 55844
    h0["SNR"] = 44.9
    h0["BC"] = 11.3
    h0["VHELIO"] = -33.1
    hdus = [fits.PrimaryHDU(header=h0), fits.ImageHDU(flux), fits.ImageHDU(error),
            fits.ImageHDU(mask), fits.ImageHDU(wave), fits.ImageHDU(flux * 0.1)]
    fits.HDUList(hdus).writeto(path)
    return {"wave": wave, "flux": flux}


def write_allstar(path: Path) -> Table:
    """An allStar table with DR17 columns; missing labels as -9999 or NaN, as in DR17."""
    rows = [
        # APOGEE_ID, FIELD, TELESCOPE, TEFF, LOGG, FE_H, MG_FE, SI_FE, SNR, ASPCAPFLAG, EXTRATARG
        ("2M21295618+1210353", "M15", "apo25m", 4800.0, 1.8, -0.5, 0.2, 0.1, 120.0, 0, 0),
        ("2M19205338+3748282", "N6791", "apo25m", 4600.0, 2.5, 0.3, 0.0, 0.05, 200.0, 0, 0),
        ("2M00000001+0000001", "N6791", "apo25m", 5900.0, 4.3, 0.1, 0.0, 0.0, 300.0, 0, 0),
        ("2M00000002+0000002", "M15", "apo25m", 4700.0, 2.0, -2.3, 0.3, 0.3, 90.0, 0, 0),
        ("2M00000003+0000003", "060+00", "apo25m", 4500.0, 2.2, 0.0, -9999.0, 0.1, 80.0, 0, 0),
        ("2M00000004+0000004", "060+00", "apo25m", 4500.0, 2.2, 0.0, 0.1, np.nan, 80.0, 0, 0),
        ("2M00000005+0000005", "K2_C4_168-21", "apo25m", 4900.0, 3.0, -0.2, 0.1, 0.1, 30.0,
         0, 0),
        ("2M00000006+0000006", "K2_C4_168-21", "apo25m", 4950.0, 3.1, -0.1, 0.1, 0.1, 150.0,
         1 << 23, 0),
        ("2M00000007+0000007", "120+12", "apo25m", 4800.0, 2.4, -0.3, 0.1, 0.1, 150.0, 0, 0),
        ("2M00000008+0000008", "M15", "apo25m", 4850.0, 2.1, -0.6, 0.2, 0.1, 150.0, 0, 1 << 4),
    ]
    names = ("APOGEE_ID", "FIELD", "TELESCOPE", "TEFF", "LOGG", "FE_H", "MG_FE", "SI_FE", "SNR",
             "ASPCAPFLAG", "EXTRATARG")
    table = Table(rows=rows, names=names)
    table["ASPCAPFLAG"] = table["ASPCAPFLAG"].astype(np.int64)
    table["EXTRATARG"] = table["EXTRATARG"].astype(np.int32)
    table["STARFLAG"] = np.zeros(len(table), np.int64)
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(table)]).writeto(path)
    return table


def write_phoenix(folder: Path, n: int = 3000, teff: int = 5800, logg: float = 4.5) -> tuple:
    """A PHOENIX HiRes flux file (erg/s/cm²/cm, PHX* labels) and its WAVE file (vacuum Å)."""
    wave = np.linspace(5000.0, 5100.0, n)
    flux_cm = (3e15 * (1.0 - 0.5 * np.exp(-0.5 * ((wave - 5050.0) / 0.2) ** 2))).astype(
        np.float32)
    h = fits.Header()
    h["PHXTEFF"] = teff
    h["PHXLOGG"] = logg
    h["PHXM_H"] = 0.0
    h["PHXALPHA"] = 0.0
    h["PHXVER"] = "16.01.00B"
    h["BUNIT"] = "erg/s/cm^2/cm"
    flux_path = folder / f"lte{teff:05d}-{logg:.2f}-0.0.PHOENIX-ACES-AGSS-COND-2011-HiRes.fits"
    wave_path = folder / "WAVE_PHOENIX-ACES-AGSS-COND-2011.fits"
    fits.PrimaryHDU(flux_cm, header=h).writeto(flux_path)
    wh = fits.Header()
    wh["UNIT"] = "Angstrom"
    fits.PrimaryHDU(wave, header=wh).writeto(wave_path)
    return flux_path, wave_path, wave, flux_cm


HARPS_E2DS = "HARPS.2020-01-01T01:00:00.000_e2ds_A.fits"
HARPS_WAVE = "HARPS.2019-12-31T20:00:00.000_wave_A.fits"
HARPS_BLAZE = "HARPS.2019-12-31T19:00:00.000_blaze_A.fits"


def harps_wavelength(n_orders: int = 4, n_pixels: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Cubic per-order solutions (coefficients, wavelength) in the DRS layout."""
    coeffs = np.array([[5000.0 + 60.0 * i, 0.9, -1e-4, 1e-8] for i in range(n_orders)])
    x = np.arange(n_pixels, dtype=float)
    wave = np.stack([np.polynomial.polynomial.polyval(x, c) for c in coeffs])
    return coeffs, wave


def write_harps_e2ds(folder: Path, *, colons_to_dashes: bool = True, with_wave: bool = True,
                     with_blaze: bool = True, seed: int = 3) -> dict:
    """e2ds + wave + blaze (4 orders x 64 px) with ESO DRS headers; the calibration file names
    in the header keep their ':' while the files on disk use '-' (as in ../shared/data)."""
    rng = np.random.default_rng(seed)
    n_orders, n_pixels = 4, 64
    coeffs, wave = harps_wavelength(n_orders, n_pixels)
    blaze = 0.2 + 0.8 * np.sin(np.linspace(0.1, np.pi - 0.1, n_pixels))[None, :].repeat(
        n_orders, 0)
    flux = 1000.0 * blaze + rng.normal(0, 5, blaze.shape)
    h = fits.Header()
    h["INSTRUME"] = "HARPS"
    h["OBJECT"] = "HD 10700"
    h["MJD-OBS"] = 58849.04
    h["HIERARCH ESO DRS VERSION"] = "HARPS_3.5"
    h["HIERARCH ESO DRS BERV"] = 12.345
    h["HIERARCH ESO DRS BJD"] = 2458849.5
    h["HIERARCH ESO DRS CCD CONAD"] = 1.42
    h["HIERARCH ESO DRS CCD SIGDET"] = 5.0
    h["HIERARCH ESO DRS SPE EXT WINDOW"] = 17
    h["HIERARCH ESO DRS CAL TH FILE"] = HARPS_WAVE
    h["HIERARCH ESO DRS BLAZE FILE"] = HARPS_BLAZE
    h["HIERARCH ESO DRS CAL TH DEG LL"] = 3
    h["HIERARCH ESO DRS CAL TH ORDER START"] = 161
    h["HIERARCH ESO DRS CAL TH ORDER NBLUE"] = 2
    h["HIERARCH ESO DRS CAL TH ORDER NGAP"] = 1
    for k, c in enumerate(coeffs.ravel()):
        h[f"HIERARCH ESO DRS CAL TH COEFF LL{k}"] = c
    for i in range(n_orders):
        h[f"HIERARCH ESO DRS SPE EXT SN{i}"] = 40.0 + i
    def disk(name: str) -> str:
        return name.replace(":", "-") if colons_to_dashes else name

    fits.PrimaryHDU(flux.astype(np.float32), header=h).writeto(folder / disk(HARPS_E2DS))
    calib = fits.Header()
    calib["INSTRUME"] = "HARPS"
    calib["HIERARCH ESO DRS VERSION"] = "HARPS_3.5"
    if with_wave:
        fits.PrimaryHDU(wave, header=calib).writeto(folder / disk(HARPS_WAVE))
    if with_blaze:
        fits.PrimaryHDU(blaze.astype(np.float32), header=calib).writeto(
            folder / disk(HARPS_BLAZE))
    return {"e2ds": folder / disk(HARPS_E2DS), "wave": wave, "blaze": blaze, "flux": flux}


def write_harps_s1d(path: Path, n: int = 500) -> np.ndarray:
    flux = np.linspace(10.0, 20.0, n).astype(np.float32)
    h = fits.Header()
    h["INSTRUME"] = "HARPS"
    h["OBJECT"] = "Gl581"
    h["CRVAL1"] = 3781.19
    h["CDELT1"] = 0.01
    h["CRPIX1"] = 1.0
    h["CTYPE1"] = "Angstrom"
    h["BUNIT"] = "Relative Flux"
    h["HIERARCH ESO DRS BERV"] = -23.5
    h["HIERARCH ESO DRS SPE EXT SN50"] = 30.0
    fits.PrimaryHDU(flux, header=h).writeto(path)
    return flux


def write_tres(path: Path, seed: int = 4) -> dict:
    """Starfish-layout HDF5: wls/fls/sigmas (n_orders, n_pix) and a BCV attribute."""
    import h5py

    rng = np.random.default_rng(seed)
    wls = np.stack([4000.0 + 80.0 * i + 0.03 * np.arange(200) for i in range(3)])
    fls = 1e-13 * (1 + 0.01 * rng.normal(size=wls.shape))
    sig = np.full(wls.shape, 1e-15)
    sig[1, 5] = 0.0  # a pixel with no uncertainty must be masked
    with h5py.File(path, "w") as f:
        f.create_dataset("wls", data=wls[::-1])  # stored red order first
        f.create_dataset("fls", data=fls[::-1])
        f.create_dataset("sigmas", data=sig[::-1])
        f.attrs["BCV"] = -19.99
    return {"wls": wls, "fls": fls}


def write_payne(folder: Path, seed: int = 5) -> dict:
    """A Payne combined spectrum, a visit file, and the apogee_wavelength.npz companion."""
    rng = np.random.default_rng(seed)
    wave = apstar_log_wavelength()[322:3242]
    flux = 1.0 + 0.01 * rng.normal(size=wave.size)
    err = np.full(wave.size, 0.01)
    err[[3, 7]] = 100.0  # bad pixels by The Payne's convention
    np.savez(folder / "apogee_wavelength.npz", wavelength=wave)
    spec = folder / "spectrum_ap_id_2M00000001+0000001_.npz"
    np.savez(spec, spectrum=flux.astype(np.float32), spec_err=err.astype(np.float32))
    visits = folder / "visit_spectra_ap_id_2M00000002+0000002_.npz"
    np.savez(visits, spectra=np.stack([flux, flux * 1.01]), spec_errs=np.stack([err, err]),
             snrs=np.array([90.0, 110.0], np.float32), vhelios=np.array([1.0, 2.0]),
             hjds=np.array([56000.5, 56010.5]))
    return {"wave": wave, "flux": flux, "err": err, "spectrum": spec, "visits": visits}


def write_tapas(path: Path) -> np.ndarray:
    """A TAPAS IPAC table: descending nm wavelengths, transmittance."""
    wave_nm = np.linspace(540.0, 500.0, 200)
    trans = 0.6 + 0.01 * np.sin(wave_nm)
    lines = ["\\origin=TAPAS", "\\airmass=4.373605", "\\baryvcor=-20.431795",
             "\\barydone=NO",
             "|               wavelength|            transmittance|",
             "|                   double|                   double|",
             "|                       nm|                         |"]
    lines += [f"   {w:.17e}   {t:.17e} " for w, t in zip(wave_nm, trans, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return wave_nm


def write_lblrtm(path: Path) -> None:
    cube = np.ones((4, 7, 50), np.float32) * np.linspace(0.9, 1.0, 50)
    h = fits.Header()
    h["CRVAL1"] = 15100.0
    h["CDELT1"] = 0.1
    h["CTYPE1"] = "WAVELENGTH"
    h["CRVAL2"] = 1.0
    h["CDELT2"] = 0.25
    h["CTYPE2"] = "AIRMASS"
    h["CRVAL3"] = 0.5
    h["CDELT3"] = 0.5
    h["CTYPE3"] = "SCALE/PW"
    fits.PrimaryHDU(cube, header=h).writeto(path)
