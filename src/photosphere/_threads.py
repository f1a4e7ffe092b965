"""Thread control for loops of many small array operations.

Multi-threaded BLAS and torch kernels pay off on large products; on small ones (a 64-pixel block
of The Cannon, a 21 × 21 solve) their thread start-up and barriers cost more than the work, and
on a shared machine whose other cores are busy they can be slower than one thread by an order
of magnitude (measured: 35× for the Cannon's per-block loop with OpenBLAS on 2 threads at a load
average of 10). :func:`single_threaded` runs such a loop on one thread per caller; callers that
want several cores split their work themselves (:func:`thread_budget` says how many).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


def thread_budget() -> int:
    """Threads the caller may use: the largest BLAS pool size now configured (the
    OPENBLAS/OMP/MKL_NUM_THREADS setting or the default), and torch's, whichever is larger."""
    import torch
    from threadpoolctl import threadpool_info

    sizes = [lib.get("num_threads") or 1 for lib in threadpool_info()
             if lib.get("user_api") == "blas"]
    return max([torch.get_num_threads(), *sizes, 1])


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """BLAS and torch limited to one thread in this block (restored afterwards)."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(before)
