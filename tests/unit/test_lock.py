"""One run per results folder: the lock is exclusive across processes and dies with its holder."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from entcal.files import LOCK_NAME, ResultsLockedError, lock_results_dir

PKG = str(Path(__file__).resolve().parents[2] / "workflow_scripts")


def child(results_dir, then="pass") -> subprocess.Popen:
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {PKG!r})
        from entcal.files import lock_results_dir, ResultsLockedError
        try:
            lock_results_dir({str(results_dir)!r}, owner="other-checkout")
        except ResultsLockedError as err:
            print("LOCKED", err, flush=True); sys.exit(3)
        print("HELD", flush=True)
        {then}
    """)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True)


def test_a_second_process_is_refused_naming_the_holder_until_the_holder_exits(tmp_path):
    rd = tmp_path / "results"
    holder = child(rd, then="sys.stdin.readline()")  # holds the lock until told to exit
    assert holder.stdout.readline().strip() == "HELD"
    with pytest.raises(
        ResultsLockedError,
        match=rf"{rd.resolve()} is in use by another run \(pid {holder.pid} on .*"
        r"checkout other-checkout",
    ) as err:
        lock_results_dir(rd)
    assert "another results_dir" in str(err.value)
    holder.stdin.write("\n")
    holder.stdin.flush()
    assert holder.wait(timeout=30) == 0
    # the holder is gone: the kernel released its lock, no stale file blocks the next run
    assert (rd / LOCK_NAME).is_file()
    path = lock_results_dir(rd, owner="here")
    assert "checkout here" in path.read_text()
    assert lock_results_dir(rd) == path  # the same process again: a no-op
    other = child(rd)
    out, _ = other.communicate(timeout=30)
    assert other.returncode == 3 and out.startswith("LOCKED") and "pid " in out


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    rd = tmp_path / "r"
    holder = child(rd, then="time.sleep(600)")
    assert holder.stdout.readline().strip() == "HELD"
    holder.kill()
    holder.wait(timeout=30)
    p = child(rd)
    out, _ = p.communicate(timeout=30)
    assert p.returncode == 0 and out.strip() == "HELD"


def test_a_lock_that_is_a_link_or_a_folder_is_refused_and_its_target_left_alone(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("do not truncate me\n")
    res = tmp_path / "res"
    res.mkdir()
    (res / LOCK_NAME).symlink_to(target)
    with pytest.raises(ResultsLockedError, match=r"\.entcal\.lock is a symbolic link.*Remove it"):
        lock_results_dir(res)
    assert target.read_text() == "do not truncate me\n"
    other = tmp_path / "res2"
    (other / LOCK_NAME).mkdir(parents=True)
    with pytest.raises(ResultsLockedError, match=r"\.entcal\.lock is not a regular file.*rm -r"):
        lock_results_dir(other)
