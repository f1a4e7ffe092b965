"""Checks the commands make before any work, and the exit codes they end with (docs/errors.md).

Exit codes: 0 success; 2 a user mistake (bad option, bad file, busy output: nothing was fitted);
3 a result was produced but is flagged (labels at a bound, out of distribution, χ²_red far above
1: printed on stderr; ``--allow-flagged`` turns this into 0); 10 + N: a batch in which N files
failed (N capped at 100; their rows say why); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from ..errors import FitError, MissingFileError

EXIT_OK = 0
EXIT_USER_ERROR = 2
EXIT_FLAGGED = 3
EXIT_BATCH_FAILED = 10
EXIT_INTERRUPTED = 130


def batch_exit_code(n_failed: int, n_flagged: int, allow_flagged: bool) -> int:
    """Exit code of a batch: 10 + failed files (capped at 110), else 3 when rows are flagged."""
    if n_failed:
        return EXIT_BATCH_FAILED + min(int(n_failed), 100)
    return EXIT_FLAGGED if n_flagged and not allow_flagged else EXIT_OK


# ---------------------------------------------------------------------------- argparse types
def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number; give a value such "
                                         "as 50000")
    return value


def finite_float(text: str) -> float:
    """argparse type: any finite number (no nan, no inf)."""
    return _number(text)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} must be > 0")
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be >= 1")
    return value


def bounded_int(lo: int, hi: int):
    """argparse type: a whole number in lo..hi."""
    def parse(text: str) -> int:
        value = _integer(text)
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{text} must be in {lo}..{hi}")
        return value
    parse.__name__ = f"int_{lo}_{hi}"
    return parse


# ---------------------------------------------------------------------------- paths
def check_output(path: str | os.PathLike | None, suffixes: tuple[str, ...], option: str) -> None:
    """An output file the command will write: its folder exists, it is not a folder, and it
    ends in one of ``suffixes``. Nothing is created."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir() or str(path).endswith(os.sep):
        raise FitError(f"{option} {path} is a folder; name a file in it, e.g. "
                       f"{p / ('results' + suffixes[0])}")
    if p.suffix.lower() not in suffixes:
        raise FitError(f"{option} {path}: the file must end in {' or '.join(suffixes)}")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise MissingFileError(f"{option} {path}: the folder {parent} does not exist; create it "
                               "first (photosphere does not create folders for you)")
    if not os.access(parent, os.W_OK):
        raise FitError(f"{option} {path}: the folder {parent} is not writable")


def plot_suffixes() -> tuple[str, ...]:
    """Image formats matplotlib can write (``.png``, ``.pdf``, ``.svg``...)."""
    from matplotlib.backend_bases import FigureCanvasBase

    return tuple(f".{k}" for k in FigureCanvasBase.get_supported_filetypes())


def check_plot(path: str | os.PathLike | None, option: str) -> None:
    """A plot path: a writable folder and an image format matplotlib knows."""
    if path is not None:
        check_output(path, plot_suffixes(), option)
