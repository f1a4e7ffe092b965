"""Load the grid forward model that ``fit`` uses: a grid file, or the embedded default grid."""

from __future__ import annotations

from pathlib import Path

from ..errors import MissingFileError, ModelError


def load_grid_model(path: str | None = None, line_strengths: str | None = None):
    """The forward model for ``fit``: a GridInterpolator of ``path`` or of the default grid, or
    the emulator of an emulator file (:func:`load_emulator`);
    with ``line_strengths`` (an ECSV of ``photosphere grid calibrate-lines``) its spectra are
    corrected by those empirical line strengths (:mod:`photosphere.grids.line_strengths`)."""
    if path is None:
        try:
            from ..grids.presets import default_grid_path
        except ImportError:
            raise MissingFileError("no --grid given and this installation has no default grid; "
                                   "pass --grid PATH (an HDF5 grid file)") from None
        path = default_grid_path()
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
    (:class:`~photosphere.grids.calibrated.CalibratedModel`)."""
    from .calibrated import CalibratedModel, has_calibration, read_calibration
    from .emulator import PCAGPEmulator

    em = PCAGPEmulator.load(path)
    return CalibratedModel(em, read_calibration(path)) if has_calibration(path) else em
