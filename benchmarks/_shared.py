"""Where the benchmarks find the real data: ``$PHOTOSPHERE_SHARED_DATA``, else ``../shared/data``
beside the repository (the layout CI uses)."""

from __future__ import annotations

import os
from pathlib import Path

SHARED = Path(os.environ.get("PHOTOSPHERE_SHARED_DATA",
                             Path(__file__).resolve().parents[1].parent / "shared" / "data"))
