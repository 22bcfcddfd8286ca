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


def test_execution_settings_come_from_config_resources_and_threads():
    from types import SimpleNamespace

    job = SimpleNamespace(config={"device": "cuda", "gpu_memory_gb": 141.0, "seed": 0}, resources=SimpleNamespace(gpu=2),
                          threads=8)  # fmt: skip
    assert execution(job) == {"device": "cuda", "gpu_memory_gb": 141.0, "gpus": 2, "threads": 8}
