"""A job's log (entcal.logs.setup_logging): what it wrote, and no exit 0 without its outputs."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "workflow_scripts"


def job(tmp_path, body: str):
    log, out = tmp_path / "job.log", tmp_path / "out.csv"
    code = (
        f"import sys; sys.path.insert(0, {str(SCRIPTS)!r})\n"
        f"from entcal.logs import setup_logging\n"
        f"setup_logging({str(log)!r}, outputs=[{str(out)!r}])\n{body}\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    return r.returncode, log.read_text(), out


@pytest.mark.parametrize(
    "body, rc, says",
    [
        ("open(sys.argv[0] if False else {out!r}, 'w').write('a,b\\n1,2\\n')", 0, "done: 1 outputs, 0.0 MB"),
        ("pass", 1, "the job is ending without writing 1 of its 1 outputs, and no exception was raised: {out}"),
        ("sys.exit(0)", 1, "the job is ending without writing 1 of its 1 outputs"),
        ("raise ValueError('bad input')", 1, "ValueError: bad input"),
    ],
)
def test_a_job_exits_0_only_with_its_outputs_and_says_so(tmp_path, body, rc, says):
    out = tmp_path / "out.csv"
    code, log, _ = job(tmp_path, body.format(out=str(out)))
    assert code == rc
    assert says.format(out=out) in log
    if "raise" in body:
        assert "ending without" not in log  # the traceback is the message


def test_a_native_crash_leaves_its_traceback_in_the_log(tmp_path):
    code, log, _ = job(tmp_path, "import ctypes; ctypes.string_at(0)")
    assert code != 0 and "Fatal Python error: Segmentation fault" in log


def test_a_failed_attempts_log_outlives_the_retry(tmp_path):
    """Snakemake deletes the rule log before a retry: the failed attempt's copy stays, a successful one's goes."""
    code, log, out = job(tmp_path, "raise MemoryError('attempt 1 ran out of memory')")
    assert code == 1
    (tmp_path / "job.log").unlink()  # what Snakemake does before the next attempt
    code, log, _ = job(tmp_path, f"open({str(out)!r}, 'w').write('a\\n1\\n')")
    assert code == 0 and "attempt-2.log of this job" in log
    kept = sorted(p.name for p in (tmp_path / "job.log.attempts").iterdir())
    assert kept == ["attempt-1.log"]
    assert "MemoryError: attempt 1 ran out of memory" in (tmp_path / "job.log.attempts" / "attempt-1.log").read_text()
    out.unlink()
    (tmp_path / "job.log.attempts" / "attempt-1.log").unlink()
    code, _, _ = job(tmp_path, f"open({str(out)!r}, 'w').write('a\\n1\\n')")
    assert code == 0 and not (tmp_path / "job.log.attempts").exists()  # nothing failed: nothing kept


def test_a_job_that_imported_another_entcal_is_named(tmp_path):
    """Adapters import the package without touching sys.path: Snakemake appends the script's folder, so an installed
    copy from elsewhere would come first; the job names both folders instead of running foreign code."""
    from pathlib import Path

    import entcal
    from entcal.logs import foreign_package

    own = Path(entcal.__file__).resolve().parents[1]
    assert foreign_package(str(own)) is None and foreign_package(None) is None
    assert foreign_package(str(tmp_path)) is None  # no package beside the script: nothing to compare
    (tmp_path / "entcal").mkdir()
    why = foreign_package(str(tmp_path))
    assert f"imported entcal from {own / 'entcal'}" in why and str(tmp_path / "entcal") in why and "pip" in why
