"""The Cannon on real APOGEE DR17 spectra: the Astro 128 lab's path from the allStar catalogue.

1. allStar selection with the lab's cuts (:func:`photosphere.io.apogee.select_allstar`: fields
   M15, N6791, K2_C4_168-21, 060+00; Teff, log g, [Fe/H], [Mg/Fe], [Si/Fe] present; S/N > 50;
   log g < 4; Teff < 5700 K; [Fe/H] > -1; no STAR_BAD, no duplicates);
2. one apStar file per star, looked up in ``apstar_dir`` (flat, or ``TELESCOPE/FIELD/`` as on
   the SDSS server) and, with ``download=True``, fetched from DR17 when absent
   (:func:`photosphere.io.download.download_apstar`; offline it stops at once with a
   :class:`~photosphere.errors.NetworkError` saying where to put the files);
3. the combined spectrum (row 0) read with bitmask bits 0-7 and 12 set to infinite uncertainty
   (ivar = 0), cut to the 7 214 ASPCAP pixels (apStar pixels 322:3242, 3648:6048, 6412:8306),
   and divided by a pseudo-continuum fitted per chip through the Cannon continuum pixels
   (quadratic Chebyshev, Ness et al. 2015 §2.3);
4. a seeded random train/validation split; the model is trained on the training stars and
   ``cannon test``/``report`` fit the validation stars against their ASPCAP labels.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..datasets.apogee_emulated import SpectraSet
from ..errors import MissingFileError, ModelError
from ..models.cannon import CannonModel

#: Cannon label name -> allStar column (the lab's five labels)
LAB_LABELS = {"teff": "TEFF", "logg": "LOGG", "feh": "FE_H", "mg_fe": "MG_FE", "si_fe": "SI_FE"}
LAB_FIELDS = ("M15", "N6791", "K2_C4_168-21", "060+00")
#: apStar pixel ranges of the 7 214-pixel ASPCAP grid (the three chips without their edges)
ASPCAP_PIXELS = ((322, 3242), (3648, 6048), (6412, 8306))


def aspcap_pixels() -> np.ndarray:
    """(7214,) indices into the 8 575 apStar pixels."""
    return np.concatenate([np.arange(a, b) for a, b in ASPCAP_PIXELS])


def load_continuum_pixels(path: str | Path | None = None, data_dir=None) -> np.ndarray:
    """(7214,) bool continuum pixels: from ``path`` (.npz with ``pixels_cannon``, or .npy), or
    the Cannon continuum list in the shared data folder."""
    from ..datasets import apogee_emulated as ae

    if path is None:
        return ae.load_continuum_pixels(data_dir)
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"continuum pixel file {path} does not exist")
    loaded = np.load(path)
    pixels = np.asarray(loaded["pixels_cannon"] if path.suffix == ".npz" else loaded)
    if pixels.dtype != bool or pixels.shape != (aspcap_pixels().size,):
        raise ModelError(f"{path}: continuum pixels must be a bool array of shape "
                         f"({aspcap_pixels().size},) on the ASPCAP pixels, got {pixels.dtype} "
                         f"{pixels.shape}")
    return pixels


@dataclass(frozen=True)
class AllStarSpec:
    """The allStar workflow's inputs and cuts (JSON-able; stored in the model provenance).

    allstar: allStar FITS path; apstar_dir: folder of apStar files; continuum_pixels: .npz/.npy
    path or None (shared data); cuts as in :func:`~photosphere.io.apogee.select_allstar`
    (``fields`` None = any field); validation_fraction and seed: the random split; download:
    fetch missing apStar files from ``base_url`` (DR17 by default).
    """

    allstar: str
    apstar_dir: str
    continuum_pixels: str | None = None
    fields: tuple[str, ...] | None = LAB_FIELDS
    min_snr: float = 50.0
    max_logg: float = 4.0
    max_teff: float = 5700.0
    min_feh: float = -1.0
    validation_fraction: float = 0.2
    seed: int = 0
    download: bool = False
    base_url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fields"] = None if self.fields is None else list(self.fields)
        return {"kind": "apogee_allstar", **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AllStarSpec:
        d = {k: v for k, v in d.items() if k != "kind"}
        d["fields"] = None if d.get("fields") is None else tuple(d["fields"])
        return cls(**d)

    def select(self):
        """The allStar rows passing the cuts (astropy Table)."""
        from ..io.apogee import read_allstar, select_allstar

        table = read_allstar(self.allstar)
        selected = select_allstar(table, fields=self.fields, min_snr=self.min_snr,
                                  max_logg=self.max_logg, max_teff=self.max_teff,
                                  min_feh=self.min_feh, labels=tuple(LAB_LABELS.values()))
        if len(selected) == 0:
            raise ModelError(f"no star of {self.allstar} passes the cuts "
                             f"{selected.meta['selection']}; relax them or check the catalogue")
        return selected

    def split(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(training rows, validation rows) of a seeded random permutation."""
        if not 0 <= self.validation_fraction < 1:
            raise ModelError(f"validation_fraction={self.validation_fraction} must lie in [0, 1)")
        order = np.random.default_rng(self.seed).permutation(n)
        n_val = round(self.validation_fraction * n)
        return np.sort(order[n_val:]), np.sort(order[:n_val])


def apstar_file(row, apstar_dir: str | Path, download: bool = False,
                base_url: str | None = None) -> Path:
    """The apStar file of one allStar row: ``apstar_dir/apStar-dr17-ID.fits`` or
    ``apstar_dir/TELESCOPE/FIELD/...``; downloaded into the latter when absent and ``download``."""
    apogee_id, field = str(row["APOGEE_ID"]).strip(), str(row["FIELD"]).strip()
    telescope = str(row["TELESCOPE"]).strip() if "TELESCOPE" in row.colnames else "apo25m"
    name = f"apStar-dr17-{apogee_id}.fits"
    root = Path(apstar_dir)
    for path in (root / name, root / telescope / field / name):
        if path.is_file():
            return path
    if not download:
        raise MissingFileError(
            f"no apStar file for {apogee_id} (field {field}, {telescope}) in {root}: looked for "
            f"{root / name} and {root / telescope / field / name}; pass --download to fetch "
            "the DR17 files (needs network) or put them there")
    from ..io.download import APOGEE_DR17_STARS, download_apstar

    return download_apstar(apogee_id, field, telescope, base_url=base_url or APOGEE_DR17_STARS,
                           cache=root / telescope / field)


def normalised_apstar(path: str | Path, continuum_pixels: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(wavelength, flux, ivar), each (7214,): the combined apStar spectrum on the ASPCAP pixels,
    bad pixels (bits 0-7, 12) at ivar = 0, divided by its per-chip pseudo-continuum."""
    from ..io.apogee import read_apstar
    from ..ops.continuum import APOGEE_CHIPS, fit_pseudo_continuum

    spectrum = read_apstar(path)
    pix = aspcap_pixels()
    if spectrum.wavelength.size <= pix[-1]:
        raise ModelError(f"{path}: {spectrum.wavelength.size} pixels, an apStar spectrum has "
                         "8575; this is not a DR17 apStar file")
    wave, flux = spectrum.wavelength[pix], spectrum.flux[pix]
    ivar = np.where(spectrum.mask[pix], 0.0, spectrum.ivar[pix])
    continuum = fit_pseudo_continuum(wave, flux, ivar, continuum_pixels, chips=APOGEE_CHIPS,
                                     on_failure="nan")
    good = np.isfinite(continuum) & (continuum > 0) & (ivar > 0)
    safe = np.where(good, continuum, 1.0)
    return wave, np.where(good, flux / safe, 1.0), np.where(good, ivar * safe**2, 0.0)


def load_stars(spec: AllStarSpec, rows=None, data_dir=None, progress: bool = False
               ) -> tuple[SpectraSet, Any]:
    """The selected stars (all, or the given row indices of the selection) as a SpectraSet of
    normalised spectra with their ASPCAP labels, and the selected table."""
    from tqdm.auto import tqdm

    table = spec.select()
    rows = np.arange(len(table)) if rows is None else np.asarray(rows, int)
    pixels = load_continuum_pixels(spec.continuum_pixels, data_dir)
    if not spec.download:   # say how many are missing before reading any
        missing = []
        for i in rows:
            try:
                apstar_file(table[int(i)], spec.apstar_dir)
            except MissingFileError as exc:
                missing.append(exc)
        if missing:
            raise MissingFileError(f"{len(missing)} of {len(rows)} selected stars have no apStar "
                                   f"file; the first: {missing[0]}")
    flux, ivar, wave = [], [], None
    for i in tqdm(rows, desc="apStar spectra", disable=not progress, leave=False,
                  file=sys.stderr):
        path = apstar_file(table[int(i)], spec.apstar_dir, spec.download, spec.base_url)
        w, f, iv = normalised_apstar(path, pixels)
        if wave is None:
            wave = w
        elif not np.allclose(w, wave, rtol=1e-9):
            raise ModelError(f"{path} is on a different wavelength grid than the other apStar "
                             "files; all must be DR17 apStar files")
        flux.append(f)
        ivar.append(iv)
    labels = np.column_stack([np.asarray(table[c], float)[rows] for c in LAB_LABELS.values()])
    snr = np.asarray(table["SNR"], float)[rows]
    flux_a, ivar_a = np.array(flux), np.array(ivar)
    return SpectraSet(tuple(LAB_LABELS), labels, flux_a, ivar_a, ivar_a == 0, snr, wave), table


def train_on_allstar(spec: AllStarSpec, *, order: int = 2, regularization: float = 0.0,
                     data_dir=None, progress: bool = False) -> CannonModel:
    """Select, read, normalise and split the stars, and train on the training part."""
    table = spec.select()
    train_rows, val_rows = spec.split(len(table))
    data, _ = load_stars(spec, train_rows, data_dir, progress)
    model = CannonModel(data.label_names, order=order, regularization=regularization,
                        progress=progress).fit(data.labels, data.flux, data.ivar, data.wavelength)
    ids = [str(x) for x in table["APOGEE_ID"]]
    model.provenance_["training_set"] = {
        **spec.to_dict(), "selection": dict(table.meta["selection"]),
        "training_ids": [ids[i] for i in train_rows],
        "validation_ids": [ids[i] for i in val_rows]}
    return model


def training_spec(model: CannonModel) -> AllStarSpec:
    stored = dict(model.provenance_.get("training_set") or {})
    if stored.get("kind") != "apogee_allstar":
        raise ModelError("this model was not trained with `photosphere cannon train --allstar`")
    for key in ("selection", "training_ids", "validation_ids"):
        stored.pop(key, None)
    return AllStarSpec.from_dict(stored)


def validation_stars(model: CannonModel, data_dir=None, progress: bool = False) -> SpectraSet:
    """The held-out stars of the model's split, read and normalised like the training stars."""
    spec = training_spec(model)
    table = spec.select()
    _, val_rows = spec.split(len(table))
    if val_rows.size == 0:
        raise ModelError("the model was trained with validation_fraction=0: no held-out stars")
    return load_stars(spec, val_rows, data_dir, progress)[0]


def report_stars(model: CannonModel, data_dir=None, progress: bool = False):
    """The report's inputs: ``(training, validation)`` stars (ASPCAP labels as the truth)."""
    spec = training_spec(model)
    table = spec.select()
    train_rows, val_rows = spec.split(len(table))
    if val_rows.size == 0:
        raise ModelError("the model was trained with validation_fraction=0: no held-out stars")
    return (load_stars(spec, train_rows, data_dir, progress)[0],
            load_stars(spec, val_rows, data_dir, progress)[0])
