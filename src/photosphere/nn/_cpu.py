"""Route CPU training around oneDNN where its backward pass crashes.

On CPUs with AVX-512 or AMX (Sapphire Rapids and later Xeons), torch 2.13.0+cpu's oneDNN
(mkldnn) convolution backward segfaults inside ``torch.autograd.backward`` while training our
networks, killing the process (and the test suite) without a Python error. Training there runs
with oneDNN switched off for its duration (PyTorch's native kernels: same results, slower);
inference keeps oneDNN. ``PHOTOSPHERE_ONEDNN=1`` keeps oneDNN on (a fixed torch),
``PHOTOSPHERE_ONEDNN=0`` turns it off on any CPU.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch

F = TypeVar("F", bound=Callable)

#: CPU flags (``/proc/cpuinfo``) of the instruction sets on which oneDNN's backward crashes.
UNSAFE_FLAGS = re.compile(r"\b(avx512\w*|amx\w*)\b")


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU feature flags of this machine (Linux ``/proc/cpuinfo``; empty elsewhere)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            return set()
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.partition(":")[2].split())
    return flags


def onednn_training_unsafe(flags: set[str] | None = None) -> bool:
    """True when oneDNN must be off for training on this CPU (see the module docstring)."""
    choice = os.environ.get("PHOTOSPHERE_ONEDNN", "").strip()
    if choice in ("0", "1"):
        return choice == "0"
    flags = cpu_flags() if flags is None else flags
    return any(UNSAFE_FLAGS.fullmatch(f) for f in flags)


@contextlib.contextmanager
def safe_training(flags: set[str] | None = None) -> Iterator[bool]:
    """oneDNN off for the body on CPUs where its backward crashes; yields whether it is off."""
    if not (onednn_training_unsafe(flags) and torch.backends.mkldnn.is_available()):
        yield False
        return
    # only the `enabled` switch: mkldnn.flags() also sets TF32 options and warns about them
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield True
    finally:
        torch.backends.mkldnn.enabled = before


def safe_training_function(fn: F) -> F:
    """Decorator: run ``fn`` inside :func:`safe_training`."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with safe_training():
            return fn(*args, **kwargs)
    return wrapper  # type: ignore[return-value]
