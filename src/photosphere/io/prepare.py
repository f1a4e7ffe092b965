"""A spectrum file read for a command or a fit: typed errors only, unusable pixels masked.

:func:`read_spectrum` is :func:`photosphere.io.read` with every reader's stumble (a string
wavelength column, a wrong shape...) turned into :class:`~photosphere.errors.FileFormatError`;
:func:`mask_nonpositive` masks the pixels whose flux is not positive (gaps, dead columns).
The commands, the batch runner, the networks and ``photosphere.read`` use both.
"""

from __future__ import annotations

import numpy as np

from ..errors import FileFormatError, PhotosphereError


def read_spectrum(path: str, **kwargs):
    """:func:`photosphere.io.read` for the commands: a reader tripping over a file it does not
    expect (a string wavelength column, a wrong shape...) raises FileFormatError, never a bare
    Python error. kwargs: passed to ``read``."""
    from .registry import read

    try:
        return read(path, **kwargs)
    except PhotosphereError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OSError,
            UnicodeError) as exc:
        # a reader tripping over an unexpected layout (a string wavelength column...) is a bad
        # file for the user, not a crash
        raise FileFormatError(f"{path} could not be read as a spectrum ({type(exc).__name__}: "
                              f"{exc}); check that it is a spectrum file of a supported "
                              "format") from None


def mask_nonpositive(spectrum):
    """``spectrum`` with its pixels of flux ≤ 0 masked: a star's flux is positive, so such
    pixels are gaps (the HARPS s1d holds its CCD gap, 5304-5338 Å, as zeros), dead columns or
    over-subtracted sky, never signal. The count is in ``meta.extra["masked_nonpositive"]``."""
    bad = ~(np.asarray(spectrum.flux) > 0) & ~np.asarray(spectrum.mask)
    n_bad = int(bad.sum())
    if not n_bad:
        return spectrum
    meta = spectrum.meta.replace(extra={**spectrum.meta.extra, "masked_nonpositive": n_bad})
    return spectrum.replace(mask=np.asarray(spectrum.mask) | bad, meta=meta)
