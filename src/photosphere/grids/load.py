"""Load the grid forward model that ``fit`` uses: a grid file, or the embedded default grid."""

from __future__ import annotations

from pathlib import Path

from ..errors import MissingFileError, ModelError

#: Models shipped inside the package, by name (``fit --grid NAME``, ``load_model(NAME)``):
#: ``optical`` is the calibrated emulator of the ``optical`` training set (docs/grids.md).
SHIPPED_MODELS = {"optical": "emulators/optical.h5"}
#: Names of the embedded default grid (``fit --grid embedded``, ``load_model("grid")``): they
#: force it where the default would be chosen per spectrum (:mod:`.default_model`).
EMBEDDED_NAMES = ("embedded", "grid", "default")
#: the package's data folder
DATA_DIR = Path(__file__).resolve().parents[1] / "data"
#: How each shipped model is made again (the package may lack it, e.g. in a source checkout).
SHIPPED_BUILD = {"optical": "`photosphere grid build --preset optical`, then `photosphere grid "
                            "emulator train --preset optical --components 30 --iterations 80 -o "
                            "FILE` and `photosphere grid calibrate-stars FILE`"}


def shipped_model_path(name: str) -> Path:
    """Where the shipped model ``name`` lies, ``photosphere/data/<SHIPPED_MODELS[name]>``;
    a MissingFileError naming the commands that make it when this installation lacks it."""
    if name not in SHIPPED_MODELS:
        raise ModelError(f"no shipped model {name!r}; choose from {', '.join(SHIPPED_MODELS)}")
    path = DATA_DIR / SHIPPED_MODELS[name]
    if not path.is_file():
        raise MissingFileError(f"the shipped model {name!r} ({path}) is not in this "
                               f"installation; make it with {SHIPPED_BUILD[name]} and pass "
                               "--grid FILE")
    return path


def load_grid_model(path: str | None = None, line_strengths: str | None = None):
    """The forward model for ``fit``: a GridInterpolator of ``path`` or of the default grid, or
    the emulator of an emulator file (:func:`load_emulator`), or a shipped model by name
    (:data:`SHIPPED_MODELS`: ``"optical"``; :data:`EMBEDDED_NAMES`: the default grid);
    with ``line_strengths`` (an ECSV of ``photosphere grid calibrate-lines``) its spectra are
    corrected by those empirical line strengths (:mod:`photosphere.grids.line_strengths`)."""
    if path is not None and str(path) in EMBEDDED_NAMES and not Path(path).exists():
        path = None
    if path is None:
        try:
            from ..grids.presets import default_grid_path
        except ImportError:
            raise MissingFileError("no --grid given and this installation has no default grid; "
                                   "pass --grid PATH (an HDF5 grid file)") from None
        path = default_grid_path()
    elif str(path) in SHIPPED_MODELS and not Path(path).exists():
        path = shipped_model_path(str(path))
    if not Path(path).is_file():
        raise MissingFileError(f"grid file {path} does not exist; pass --grid PATH of an HDF5 "
                               "grid (photosphere grid build makes one)")
    from .emulator import FORMAT as EMULATOR_FORMAT
    from .store import hdf5_format

    if hdf5_format(Path(path)) == EMULATOR_FORMAT:
        if line_strengths is not None:
            raise ModelError("--line-strengths corrects grid files; an emulator carries "
                                   "its own line calibration (`photosphere grid "
                                   "calibrate-stars`)")
        return load_emulator(path)
    from ..grids.interpolate import GridInterpolator

    model = GridInterpolator(path)
    if line_strengths is None:
        return model
    from ..grids.line_strengths import CorrectedSource, LineStrengths

    return CorrectedSource(model, LineStrengths.read(line_strengths))


def load_emulator(path: str | Path):
    """The emulator in ``path``, with its line calibration applied when the file holds one
    (:class:`~photosphere.grids.calibrated.CalibratedModel`), and the labels that calibration
    tied by relations tied again (:class:`~photosphere.grids.tied_labels.TiedLabels`). The model
    records the file it came from in ``path`` (as a GridInterpolator does), so that the σ_sys
    measured for a shipped model can be told apart (:mod:`photosphere.infer.protocol`)."""
    from .calibrated import CalibratedModel, has_calibration, read_calibration
    from .emulator import PCAGPEmulator
    from .tied_labels import TiedLabels

    em = PCAGPEmulator.load(path)
    if not has_calibration(path):
        em.path = Path(path)
        return em
    calibration = read_calibration(path)
    model = CalibratedModel(em, calibration)
    model = TiedLabels(model, calibration.tied) if calibration.tied else model
    model.path = Path(path)  # the outer model only: a leave-one-out ``without()`` has none
    return model
