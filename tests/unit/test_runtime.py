"""Jobs' allocator settings: glibc takes them (a 64 MiB block comes from the heap, not its own mmap)."""

import ctypes
import json
import os
import platform
import subprocess
import sys

import pytest

from entcal.runtime import ALLOCATOR_ENV, allocator_settings, execution, job_environment

# a child process: malloc 64 MiB and report where glibc put it (mallinfo2: hblkhd = mmapped bytes, arena = heap)
CHILD = """
import ctypes, json
libc = ctypes.CDLL("libc.so.6")
class MI(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                 "fsmblks", "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = MI
libc.malloc.restype = ctypes.c_void_p
p = libc.malloc(64 << 20)
m = libc.mallinfo2()
print(json.dumps({"mmapped": m.hblkhd, "heap": m.arena}))
"""


def _glibc_has_mallinfo2() -> bool:
    try:
        return platform.libc_ver()[0] == "glibc" and hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except OSError:
        return False


def _where(env: dict) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_ENV}
    r = subprocess.run([sys.executable, "-c", CHILD], env={**base, **env}, capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


@pytest.mark.skipif(not _glibc_has_mallinfo2(), reason="glibc >= 2.33 only (the settings are glibc's)")
def test_glibc_takes_the_settings():
    plain, tuned = _where({}), _where(job_environment({}))
    assert plain["mmapped"] >= 64 << 20  # glibc's default: a block this size gets its own mapping
    assert tuned["mmapped"] == 0 and tuned["heap"] >= 64 << 20  # under the threshold: served from the heap


def test_a_users_own_value_wins_and_is_recorded():
    assert job_environment({}) == ALLOCATOR_ENV
    mine = {"MALLOC_MMAP_THRESHOLD_": "131072"}
    assert job_environment(mine) == {"MALLOC_TRIM_THRESHOLD_": ALLOCATOR_ENV["MALLOC_TRIM_THRESHOLD_"]}
    assert allocator_settings(mine) == {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": None}


def test_execution_settings_come_from_the_execution_param_resources_and_threads(monkeypatch):
    from types import SimpleNamespace

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # as SLURM gives a job its GPUs: left as they are
    job = SimpleNamespace(
        params=SimpleNamespace(execution={"device": "cuda", "gpu_memory_gb": 141.0}),
        config={"device": "cpu", "gpu_memory_gb": 1.0},  # never read: the params are the one way in
        resources=SimpleNamespace(gpu=2),
        threads=8,
    )
    assert execution(job) == {"device": "cuda", "gpu_memory_gb": 141.0, "gpus": 2, "threads": 8}


def test_concurrent_gpu_jobs_get_their_own_devices_and_slurms_choice_stands(tmp_path):
    """Two jobs of one GPU each on a 2-GPU workstation see different devices; a 2-GPU job waits for both;
    a job that SLURM (or the user) has given devices keeps them."""
    import subprocess
    import sys

    from pathlib import Path

    scripts = Path(__file__).resolve().parents[2] / "workflow_scripts"
    code = (
        "import os, sys, time; sys.path.insert(0, {s!r}); os.environ.pop('CUDA_VISIBLE_DEVICES', None)\n"
        "from entcal.runtime import pin_gpus\n"
        "print(pin_gpus({n}, total=2, lock_dir={d!r}, wait_s={w}), flush=True); time.sleep({hold})"
    )

    def start(n, hold, w=30):
        return subprocess.Popen(
            [sys.executable, "-c", code.format(s=str(scripts), n=n, d=str(tmp_path), w=w, hold=hold)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    a = start(1, 3)
    first = a.stdout.readline().strip()
    b = start(1, 0)
    second = b.stdout.readline().strip()
    assert {first, second} == {"0", "1"}  # not both cuda:0
    b.wait()
    both = start(2, 0)  # needs both: waits until the first job ends
    assert both.stdout.readline().strip() == "0,1"
    assert a.wait() == 0 and both.wait() == 0
    too_many = start(3, 0)
    assert too_many.wait() != 0 and "needs 3 GPUs and this machine shows 2" in too_many.stderr.read()
    import os

    from entcal.runtime import pin_gpus

    os.environ["CUDA_VISIBLE_DEVICES"] = "3"
    try:
        assert pin_gpus(1, total=4, lock_dir=str(tmp_path)) is None and os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    finally:
        del os.environ["CUDA_VISIBLE_DEVICES"]
