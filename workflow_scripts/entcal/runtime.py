"""Process settings every job starts with: the C allocator's thresholds.

glibc's malloc serves every block above ``M_MMAP_THRESHOLD`` (128 KiB at start) with its own
``mmap`` and gives it back with ``munmap`` when freed, so a job that allocates and frees tensors of
a few MB on every step (the KV cache growing in generation, logits, activations) takes fresh pages
from the kernel each time and faults them in again. On a 2-core CPU that churn was half of a demo
generation job's time (``benchmarks/run.py``, "allocator"). :data:`ALLOCATOR_ENV` keeps blocks
below 256 MiB on the heap and lets a process keep up to 1 GiB of freed heap before trimming.

These are environment variables read once when a process starts, so the Snakefile sets them for the
jobs it starts (``rules/common.smk``); values the user has set already win. They change no result:
only where blocks come from, not what is computed in them. Other allocators (jemalloc, tcmalloc
through ``LD_PRELOAD``) ignore them.
"""

from __future__ import annotations

from collections.abc import Mapping

MIB = 1 << 20

ALLOCATOR_ENV = {
    "MALLOC_MMAP_THRESHOLD_": str(256 * MIB),  # blocks below this come from the heap, not their own mmap
    "MALLOC_TRIM_THRESHOLD_": str(1024 * MIB),  # freed heap a process may keep before returning it
}


def job_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The allocator settings ``environ`` lacks (a variable the user set is left as it is)."""
    return {k: v for k, v in ALLOCATOR_ENV.items() if k not in environ}


def allocator_settings(environ: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """The allocator settings this process started with (recorded in the sidecars of generation and
    training jobs; ``None``: not set, glibc's defaults)."""
    import os

    environ = os.environ if environ is None else environ
    return {k: environ.get(k) for k in ALLOCATOR_ENV}
