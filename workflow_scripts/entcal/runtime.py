"""Process settings every job starts with: the C allocator's thresholds.

glibc's malloc serves every block above ``M_MMAP_THRESHOLD`` (128 KiB at start) with its own
``mmap`` and gives it back with ``munmap`` when freed, so a job that allocates and frees tensors of
a few MB on every step (the KV cache growing in generation, logits, activations) takes fresh pages
from the kernel each time and faults them in again. On a 2-core CPU that churn was nearly half of a
cold generation call at the demo's largest shape (``benchmarks/run.py``, benchmark 4). :data:`ALLOCATOR_ENV` keeps blocks
below 256 MiB on the heap and lets a process keep up to 1 GiB of freed heap before trimming.

These are environment variables read once when a process starts, so the Snakefile sets them for the
jobs it starts (``rules/common.smk``); values the user has set already win. They change no result:
only where blocks come from, not what is computed in them. Other allocators (jemalloc, tcmalloc
through ``LD_PRELOAD``) ignore them.
"""

from __future__ import annotations

import os
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
    environ = os.environ if environ is None else environ
    return {k: environ.get(k) for k in ALLOCATOR_ENV}


def execution(job) -> dict:
    """Where and how a model job runs, from a Snakemake job object (``snakemake`` in an adapter):
    ``device`` and ``gpu_memory_gb`` from the configuration, ``gpus`` from the job's resources,
    ``threads`` from the job. Execution settings change no result, so they are read here, not passed
    as params (a change to them reruns nothing)."""
    cfg = job.config
    return {"device": cfg["device"], "gpu_memory_gb": cfg["gpu_memory_gb"], "gpus": job.resources.gpu, "threads": job.threads}
