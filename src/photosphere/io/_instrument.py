"""Which instrument took a spectrum, and its resolving power R, from the file alone.

The instrument comes from the ``INSTRUME`` keyword, else from a file-name prefix naming a
known spectrograph (archives and libraries name files ``HARPS_Gl643.fits``, ``SOPHIE_...``);
the source is recorded either way. R comes only from header keywords or from the documented
per-instrument values below (each with its source), never guessed: an instrument whose R
depends on a setting the file does not record gets no R, and a fit then needs ``--resolution``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ._common import header_float, header_value

#: Spectrographs recognised in a file-name prefix (``harps_x.fits``, ``SOPHIE_x.fits``).
_NAME_PREFIX = re.compile(r"^(harps-?n|harps|sophie|hires|mike|uves|feros|espresso)[_.\-]", re.I)
_CANONICAL = {"HARPSN": "HARPS-N", "HARPS-N": "HARPS-N"}

#: Instruments with one spectroscopic setting: nominal R and its source.
FIXED_RESOLUTION: dict[str, tuple[float, str]] = {
    # ESO HARPS User Manual; Mayor et al. 2003, The Messenger 114, 20 (high-accuracy mode)
    "HARPS": (115_000.0, "HARPS high-accuracy mode (Mayor et al. 2003, Messenger 114, 20)"),
    # Cosentino et al. 2012, Proc. SPIE 8446, 84461V
    "HARPS-N": (115_000.0, "HARPS-N (Cosentino et al. 2012, SPIE 8446)"),
}

#: HARPS EGGS (high-efficiency) mode, recorded in ``ESO INS MODE`` (ESO HARPS User Manual).
HARPS_EGGS_RESOLUTION = 80_000.0

#: SOPHIE modes (Perruchot et al. 2008, Proc. SPIE 7014, 70140J): high resolution / efficiency.
SOPHIE_RESOLUTION = {"HR": 75_000.0, "HE": 39_000.0}

#: Keck/HIRES resolving power by decker, from the decker's slit width. Widths: Keck HIRES
#: decker list (also XIDL ``hires_setdecker``: B5/C1 0.861", E4 0.400"); R: W. M. Keck
#: Observatory, "Comparing KPF to HIRES" (R = 49 000 for the 0.86"-wide slit, 80 000 for
#: 0.40"). Deckers of other widths (B1-B4 0.574", C4-D4) are not in that source: no R.
HIRES_DECKER_RESOLUTION = {
    **{d: (0.861, 49_000.0) for d in ("B5", "C1", "C2", "C3")},
    **{d: (0.400, 80_000.0) for d in ("E1", "E2", "E3", "E4")},
}


def instrument_of(header: Any, path: str | Path | None) -> tuple[str | None, str | None]:
    """(instrument, source): from ``INSTRUME`` (first word, upper case), else a file-name
    prefix naming a known spectrograph; (None, None) when neither says."""
    value = header_value(header, "INSTRUME") if header is not None else None
    if value:
        word = re.split(r"[\s:,;/]+", str(value).strip())[0].upper()
        return _CANONICAL.get(word, word), "header INSTRUME"
    if path is not None:
        m = _NAME_PREFIX.match(Path(path).name)
        if m:
            word = m.group(1).upper()
            return _CANONICAL.get(word, word), "file name (the header does not name it)"
    return None, None


def _mode_card(header: Any, values: tuple[str, ...]) -> str | None:
    """The value of a header card whose key mentions MODE and whose value is one of ``values``."""
    for key in header.keys():
        if "MODE" not in str(key).upper():
            continue
        v = str(header_value(header, key, "") or "").strip().upper()
        if v in values:
            return v
    return None


def resolving_power(header: Any, instrument: str | None) -> tuple[float | None, str | None]:
    """(R, source) from the header or the documented instrument tables; (None, reason)."""
    if header is not None:
        spec_res = header_float(header, "SPEC_RES")  # ESO Phase 3 / IVOA: resolving power
        if spec_res is not None and spec_res > 0:
            return spec_res, "header SPEC_RES"
    if instrument is None:
        return None, None
    if instrument == "HARPS" and header is not None and \
            str(header_value(header, "HIERARCH ESO INS MODE", "") or "").upper() == "EGGS":
        return HARPS_EGGS_RESOLUTION, "HARPS EGGS mode (header ESO INS MODE; ESO User Manual)"
    if instrument in FIXED_RESOLUTION:
        return FIXED_RESOLUTION[instrument]
    if instrument == "SOPHIE":
        mode = _mode_card(header, tuple(SOPHIE_RESOLUTION)) if header is not None else None
        if mode is None:
            return None, ("SOPHIE mode (HR R=75000 / HE R=39000) is not recorded in the file; "
                          "pass --resolution")
        return SOPHIE_RESOLUTION[mode], f"SOPHIE {mode} mode (Perruchot et al. 2008)"
    if instrument == "HIRES":
        decker = str(header_value(header, "DECKNAME", "") or "").strip().upper() \
            if header is not None else ""
        if decker in HIRES_DECKER_RESOLUTION:
            width, r = HIRES_DECKER_RESOLUTION[decker]
            return r, f"HIRES decker {decker} ({width}\" slit; Keck HIRES/KPF comparison)"
        return None, (f"HIRES R depends on the decker ({decker or 'not recorded'}), which is not "
                      "in the documented table; pass --resolution")
    return None, (f"{instrument}: R depends on the slit/setting, which the file does not "
                  "record; pass --resolution")


def instrument_extras(header: Any, path: str | Path | None) -> tuple[str | None, dict[str, Any]]:
    """(instrument, meta extras): ``instrument_source``, ``resolution``, ``resolution_source``."""
    instrument, source = instrument_of(header, path)
    extra: dict[str, Any] = {}
    if source:
        extra["instrument_source"] = source
    r, r_source = resolving_power(header, instrument)
    if r is not None:
        extra["resolution"] = float(r)
    if r_source:
        extra["resolution_source"] = r_source
    return instrument, extra
