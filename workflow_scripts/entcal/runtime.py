"""Process settings every job starts with: the C allocator's thresholds.

glibc's malloc serves every block above ``M_MMAP_THRESHOLD`` (128 KiB at start) with its own
``mmap`` and gives it back with ``munmap`` when freed, so a job that allocates and frees tensors of
a few MB on every step (the KV cache growing in generation, logits, activations) takes fresh pages
from the kernel each time and faults them in again. On a 2-core CPU that churn was nearly half of a
cold generation call at the demo's largest shape (``benchmarks/run.py``, benchmark 4). :data:`ALLOCATOR_ENV`
keeps blocks below 256 MiB on the heap and lets a process keep up to 1 GiB of freed heap before trimming.

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
    ``device`` and ``gpu_memory_gb`` from its ``execution`` param (rules/common.smk, ``execution_settings``: a
    derived param, so a change to them reruns nothing), ``gpus`` from the job's resources, ``threads`` from the job.
    A GPU job outside SLURM gets its own GPUs (:func:`pin_gpus`) before anything touches CUDA."""
    cfg = job.params.execution
    gpus = job.resources.gpu
    if cfg["device"] != "cpu" and isinstance(gpus, int) and gpus > 0:
        pin_gpus(gpus)
    return {"device": cfg["device"], "gpu_memory_gb": cfg["gpu_memory_gb"], "gpus": gpus, "threads": job.threads}


# --------------------------------------------------------------------------------------------------
# One workstation: each job its own GPUs

_CLAIMED: list[int] = []  # file descriptors holding this process's GPU claims, for its life


def visible_gpus() -> int:
    """GPUs the NVIDIA driver shows (``/proc/driver/nvidia/gpus``), read without initialising CUDA."""
    folder = "/proc/driver/nvidia/gpus"
    return len(os.listdir(folder)) if os.path.isdir(folder) else 0


def pin_gpus(n: int, total: int | None = None, lock_dir: str | None = None, wait_s: float = 600.0) -> str | None:
    """Give this process ``n`` GPUs of its own and set ``CUDA_VISIBLE_DEVICES`` to them; returns it.

    Snakemake's local executor caps the jobs' summed ``gpu`` resource at what the profile declares, but it
    does not say which devices a job may use, so concurrent jobs would all take ``cuda:0``. Each job claims
    devices with an exclusive ``flock`` on ``{lock_dir}/entcal-gpu-<i>.lock`` (released by the kernel when the
    job exits, however it exits) and sees only those. Where ``CUDA_VISIBLE_DEVICES`` is set already (SLURM
    sets it for its jobs, or the user did), or where no NVIDIA driver shows GPUs, it is left as it is (None)."""
    import fcntl
    import logging
    import tempfile
    import time

    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return None
    total = visible_gpus() if total is None else total
    if total == 0:  # no NVIDIA driver to ask: the model loader says whether the device exists
        return None
    if total < n:
        raise RuntimeError(
            f"this job needs {n} GPUs and this machine shows {total}: run it on a machine with "
            f"{n} GPUs, or leave its model out (--config exclude_models=[...])"
        )
    lock_dir = lock_dir or tempfile.gettempdir()
    t0, mine = time.monotonic(), []
    while True:
        for i in range(total):
            if len(mine) == n:
                break
            fd = os.open(os.path.join(lock_dir, f"entcal-gpu-{i}.lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                mine.append((i, fd))
            except OSError:
                os.close(fd)
        if len(mine) == n:
            break
        for _, fd in mine:  # all or none: never hold part of a set while waiting
            os.close(fd)
        mine = []
        if time.monotonic() - t0 > wait_s:
            raise RuntimeError(
                f"no {n} free GPUs of {total} after {wait_s:.0f} s (held by other jobs; see "
                f"{lock_dir}/entcal-gpu-*.lock and fuser)"
            )
        time.sleep(2.0)
    _CLAIMED.extend(fd for _, fd in mine)
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i, _ in mine)
    logging.getLogger("entcal.job").info(
        "GPUs %s of %d are this job's (CUDA_VISIBLE_DEVICES)", os.environ["CUDA_VISIBLE_DEVICES"], total
    )
    return os.environ["CUDA_VISIBLE_DEVICES"]
