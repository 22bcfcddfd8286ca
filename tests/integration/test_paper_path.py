"""The paper grid's own code path on local stand-ins: tiny models laid out as hub snapshots (one base,
one instruct with a chat template) and tiny files shaped like WikiText-103, WritingPrompts and
CodeContests, through download -> prepare -> generate -> score, offline (HF_HUB_OFFLINE=1)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SHA = "0123456789abcdef0123456789abcdef01234567"
DSHA = "89abcdef0123456789abcdef0123456789abcdef"

pytestmark = pytest.mark.slow


def warm(cache: Path, kind: str, repo: str, files: dict[str, Path | bytes], sha: str) -> None:
    """The cache layout a completed snapshot_download leaves (blobs, snapshots/<sha>, refs/main)."""
    root = cache / f"{kind}s--{repo.replace('/', '--')}"
    for i, (rel, src) in enumerate(files.items()):
        blob = root / "blobs" / f"{kind}{i}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(src.read_bytes() if isinstance(src, Path) else src)
        link = root / "snapshots" / sha / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(blob)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(sha)


def parquet_bytes(df: pd.DataFrame, tmp: Path) -> bytes:
    p = tmp / "x.parquet"
    df.to_parquet(p)
    return p.read_bytes()


@pytest.fixture(scope="module")
def paper_path(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("paper")
    cache = tmp / "hub"
    model_files = {p.name: p for p in tiny_model_dir.iterdir()}
    warm(cache, "model", "org/tiny-base", model_files, SHA)
    chat_dir = tmp / "chat"
    shutil.copytree(tiny_model_dir, chat_dir)
    tc = json.loads((chat_dir / "tokenizer_config.json").read_text())
    tc["chat_template"] = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    (chat_dir / "tokenizer_config.json").write_text(json.dumps(tc))
    warm(cache, "model", "org/tiny-chat", {p.name: p for p in chat_dir.iterdir()}, SHA)
    # dataset stand-ins, shaped like the hub repositories
    lines = []
    for i in range(12):
        lines += [f" = Article {i} = \n", "", " The quick brown fox jumps over the lazy dog . " * 12 + "\n"]
    warm(
        cache,
        "dataset",
        "org/wikitext",
        {"wikitext-103-raw-v1/train-00000-of-00001.parquet": parquet_bytes(pd.DataFrame({"text": lines}), tmp)},
        DSHA,
    )
    wp = pd.DataFrame(
        {
            "prompt": [f"[ WP ] A fox number {i} ." for i in range(12)],
            "story": ["The fox did n't stop . <newline> It ran and ran over the lazy dog . " * 10] * 12,
        }
    )
    warm(cache, "dataset", "org/wp", {"data/train-00000-of-00001.parquet": parquet_bytes(wp, tmp)}, DSHA)
    sol = "def add(a, b):\n    return a + b\n\nprint(add(2, 3))\n" * 8
    cc = {
        s: parquet_bytes(
            pd.DataFrame(
                {
                    "name": [f"{s}{i}" for i in range(5)],
                    "description": ["Add two numbers."] * 5,
                    "solutions": [{"language": [3], "solution": [sol]}] * 5,
                }
            ),
            tmp,
        )
        for s in ("train", "valid", "test")
    }
    warm(cache, "dataset", "org/cc", {f"data/{s}-00000-of-00001.parquet": b for s, b in cc.items()}, DSHA)

    cfg = {
        "fidelity": "exact",
        "results_dir": str(tmp / "results"),
        "downloads_dir": str(tmp / "downloads"),
        "hf_cache_dir": str(cache),
        "revisions_lock": str(tmp / "lock.yaml"),
        "device": "cpu",
        "dtype": "float32",
        "threads": 1,
        "generation": {
            "n_prompts": 3,
            "prompt_tokens": 8,
            "max_new_tokens": 12,
            "min_reference_tokens": 12,
            "batch_size": 2,
            "shard_size": 2,
        },
        "scoring": {"batch_size": 2},
        "analysis": {"max_len": 12},
        "samplers": {
            "base": [
                {"sampler": "ancestral", "temperature": 1.0},
                {"sampler": "top_p", "param": 0.9, "temperature": 1.0},
            ],
            "instruct": [{"sampler": "ancestral", "temperature": 1.0}],
        },
        "mauve": {"featurizers": {}},
        "datasets": {
            "wikitext": {
                "source": "hf",
                "repo_id": "org/wikitext",
                "revision": DSHA,
                "builder": "wikitext103",
                "min_chars": 200,
                "heldout_fraction": 0.5,
                "window_chars": 4000,
            },
            "writingprompts": {
                "source": "hf",
                "repo_id": "org/wp",
                "revision": DSHA,
                "builder": "writingprompts",
                "heldout_fraction": 0.5,
                "window_chars": 4000,
            },
            "codecontests": {
                "source": "hf",
                "repo_id": "org/cc",
                "revision": DSHA,
                "builder": "codecontests",
                "heldout_fraction": 0.5,
                "window_chars": 4000,
            },
        },
        "models": {
            "base": {
                "family": "tiny",
                "source": "hf",
                "repo_id": "org/tiny-base",
                "revision": SHA,
                "n_params": 1000,
                "instruct": False,
            },
            "chat": {
                "family": "tiny",
                "source": "hf",
                "repo_id": "org/tiny-chat",
                "revision": "main",
                "n_params": 1000,
                "instruct": True,
            },
        },
    }
    # the chat model is configured at `main` and pinned by a lock file, as `python -m entcal.hub pin` writes it
    (tmp / "lock.yaml").write_text(
        yaml.safe_dump({"models": {"chat": {"repo_id": "org/tiny-chat", "revision": "main", "commit": SHA}}})
    )
    p = tmp / "paper_tiny.yaml"
    p.write_text(yaml.safe_dump(cfg))
    rd = Path(cfg["results_dir"])
    targets = [str(rd / "scores" / d / f"{m}.parquet") for d in cfg["datasets"] for m in ("base", "chat")]
    targets += [str(rd / "scores_extra" / d / "base.parquet") for d in cfg["datasets"]]  # top-p, beyond the paper
    targets += [
        str(rd / "generations" / d / m / "ancestral-t1.parquet") for d in cfg["datasets"] for m in ("base", "chat")
    ]
    targets += [str(rd / "tables" / "per_step.parquet")]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    r = subprocess.run(
        [sys.executable, "-m", "snakemake", *targets, "--cores", "2", "--configfile", str(p)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    return rd, Path(cfg["downloads_dir"]), cfg


@pytest.fixture(scope="module")
def authors_path(paper_path):
    """The same stand-ins under ``fidelity: authors`` (the base model, ancestral sampling), from the same hub cache.
    NF4 needs bitsandbytes and CUDA, so ``precision: exact`` overrides that one switch of the preset."""
    rd0, _, cfg0 = paper_path
    cfg = json.loads(json.dumps(cfg0))
    tmp = rd0.parent / "authors"
    cfg.update(
        fidelity="authors", precision="exact", results_dir=str(tmp / "results"), downloads_dir=str(tmp / "downloads")
    )
    cfg["models"] = {"base": cfg["models"]["base"]}
    cfg["samplers"] = {"base": [{"sampler": "ancestral", "temperature": 1.0}]}
    p = tmp / "authors.yaml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(yaml.safe_dump(cfg))
    rd = Path(cfg["results_dir"])
    targets = [str(rd / "tables" / "per_step.parquet"), str(rd / "config.effective.yaml")]
    r = subprocess.run(
        [sys.executable, "-m", "snakemake", *targets, "--cores", "2", "--configfile", str(p)],
        cwd=ROOT,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    return rd, cfg


def test_downloads_are_pinned_snapshots(paper_path):
    _, dl, _ = paper_path
    for m in ("base", "chat"):
        (folder,) = dl.glob(f"models/{m}--*")  # one folder, keyed by the resolved source (entcal.grid)
        src = json.loads((folder / "entcal_source.json").read_text())
        assert src["revision"] == SHA and src["commit"] == SHA  # the lock pinned `main` for the chat model
    (data,) = dl.glob("datasets/codecontests--*")
    assert (data / "data" / "valid-00000-of-00001.parquet").is_file()


def test_prepared_datasets_follow_the_paper(paper_path):
    rd, _, _ = paper_path
    wp = pd.read_parquet(rd / "data" / "writingprompts" / "docs.parquet")
    assert wp["instruction"].str.startswith("Write a story based on the following prompt: A fox number").all()
    assert not wp["text"].str.contains("<newline>| n't|\\[ WP \\]").any()
    cc = pd.read_parquet(rd / "data" / "codecontests" / "docs.parquet")
    assert len(cc) == 15 and cc["text"].str.startswith("```\n").all()  # train + valid + test
    assert cc["instruction"].str.startswith("Write code to solve the following coding problem").all()
    wt = pd.read_parquet(rd / "data" / "wikitext" / "docs.parquet")
    assert len(wt) == 12 and (wt["n_chars"] >= 200).all()


def test_generation_and_scoring_for_base_and_instruct_models(paper_path):
    rd, _, cfg = paper_path
    g = cfg["generation"]
    for d in cfg["datasets"]:
        gb = pd.read_parquet(rd / "generations" / d / "base" / "ancestral-t1.parquet")
        gc = pd.read_parquet(rd / "generations" / d / "chat" / "ancestral-t1.parquet")
        assert len(gb) == len(gc) == g["n_prompts"]
        s = pd.read_parquet(rd / "scores" / d / "base.parquet")
        assert set(s["setting"]) == {"ancestral-t1"} and (s["n_tokens"] == g["max_new_tokens"]).all()
        sx = pd.read_parquet(rd / "scores_extra" / d / "base.parquet")  # the sampler beyond the paper, apart
        assert (
            set(sx["setting"]) == {"top_p0.9-t1"}
            and sx["token_ids"].map(list).tolist() == s["token_ids"].map(list).tolist()
        )
        sc = pd.read_parquet(rd / "scores" / d / "chat.parquet")
        assert set(sc["setting"]) == {"ancestral-t1"}
        # the same human tokens are scored for both models; prompts differ where instructions differ
        assert s[s["setting"] == "ancestral-t1"]["token_ids"].map(list).tolist() == sc["token_ids"].map(list).tolist()
        if d == "wikitext":
            assert (gb["prompt_len"] == gc["prompt_len"]).all()
        else:  # base: "Q: ...\nA: " ; instruct: its chat template
            assert (gb["prompt_len"] != gc["prompt_len"]).all()
        meta = json.loads((rd / "generations" / d / "base" / "ancestral-t1.json").read_text())
        assert meta["backend"] == "hf" and meta["shards"] == 2  # 3 prompts, shards of 2


def test_both_fidelities_run_and_differ_where_the_authors_code_does(paper_path, authors_path):
    """fidelity: authors against exact on the same stand-ins: the recorded choices, the WritingPrompts and
    CodeContests texts, the same WikiText generation with its reference log loss shifted by one token, and
    the summary rows saying which fidelity made them."""
    rd0, _, _ = paper_path
    rd1, _ = authors_path
    eff = yaml.safe_load((rd1 / "config.effective.yaml").read_text())
    assert eff["fidelity"] == "authors" and eff["analysis"]["reference_start"] == 2
    assert eff["analysis"]["estimator"] == "pooled" and eff["analysis"]["smoothing_logloss"] == 0.1
    assert {d["text_rules"] for d in eff["datasets"].values()} == {"authors"}
    assert eff["precision"] == "exact"  # the one switch set by hand
    # texts: the authors' WritingPrompts keep "[WP]" and the markers; their CodeContests fence has no newline
    wp0, wp1 = (pd.read_parquet(rd / "data" / "writingprompts" / "docs.parquet") for rd in (rd0, rd1))
    assert not wp0["text"].str.contains("<newline>").any() and wp1["text"].str.contains("<newline>").all()
    assert wp1["instruction"].str.contains("[WP] A fox number", regex=False).all()
    cc1 = pd.read_parquet(rd1 / "data" / "codecontests" / "docs.parquet")
    assert cc1["text"].str.startswith("```def add").all()
    # WikiText (this tokenizer adds no BOS, so the prompts agree): the same generation, the reference log loss
    # of step t taken from reference token t + 1
    s0, s1 = (pd.read_parquet(rd / "scores" / "wikitext" / "base.parquet") for rd in (rd0, rd1))
    s0 = s0[s0["setting"] == "ancestral-t1"]
    assert s0["token_ids"].map(list).tolist() == s1["token_ids"].map(list).tolist()
    g0, g1 = (pd.read_parquet(rd / "generations" / "wikitext" / "base" / "ancestral-t1.parquet") for rd in (rd0, rd1))
    assert g0["token_ids"].map(list).tolist() == g1["token_ids"].map(list).tolist()
    key = ["dataset", "model", "setting"]
    p0, p1 = (pd.read_parquet(rd / "tables" / "per_step.parquet").set_index(key) for rd in (rd0, rd1))
    w0, w1 = (p.loc[("wikitext", "base", "ancestral-t1")].set_index("step") for p in (p0, p1))
    assert np.allclose(w0["entropy_mean"], w1["entropy_mean"])
    steps = w1.index[w1["logloss_mean"].notna()]
    assert len(steps) >= 10
    assert np.allclose(w1.loc[steps, "logloss_mean"].to_numpy(), w0.loc[steps + 1, "logloss_mean"].to_numpy())
    assert not np.allclose(w1.loc[steps, "logloss_mean"].to_numpy(), w0.loc[steps, "logloss_mean"].to_numpy())
    # where the texts differ, so do the human tokens scored
    for d in ("writingprompts", "codecontests"):
        a, b = (pd.read_parquet(rd / "scores" / d / "base.parquet") for rd in (rd0, rd1))
        assert a[a["setting"] == "ancestral-t1"]["token_ids"].map(list).tolist() != b["token_ids"].map(list).tolist()
    # every summary row names its fidelity and reference token
    for rd, fid, start in ((rd0, "exact", 1), (rd1, "authors", 2)):
        summ = pd.read_csv(rd / "tables" / "summary.csv")
        assert set(summ["fidelity"]) == {fid} and set(summ["reference_start"]) == {start}


def test_one_name_with_two_sources_gets_two_folders_and_a_changed_cache_blob_is_found(paper_path, tmp_path):
    """Two configurations that give the model `base` different repositories and share downloads_dir: the second
    downloads into its own folder, keyed by its source, and the first's is untouched. A weight changed in the hub
    cache (hard-linked into the model folder) is found before any job runs."""
    import copy

    rd, dl, cfg = paper_path
    (first,) = dl.glob("models/base--*")
    before = {p: p.read_bytes() for p in first.rglob("*") if p.is_file()}
    other = copy.deepcopy(cfg)
    other["results_dir"] = str(tmp_path / "other")
    other["models"]["base"]["repo_id"] = "org/tiny-chat"  # the same name, another repository
    q = tmp_path / "other.yaml"
    q.write_text(yaml.safe_dump(other))
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    from entcal.grid import download_folder

    second = Path(download_folder(other, "model", "base"))
    assert second != first and second.parent == first.parent
    r = subprocess.run(
        [sys.executable, "-m", "snakemake", str(second), "--cores", "1", "--configfile", str(q)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert json.loads((second / "entcal_source.json").read_text())["repo_id"] == "org/tiny-chat"
    assert {p: p.read_bytes() for p in first.rglob("*") if p.is_file()} == before

    weights = next(p for p in first.iterdir() if p.suffix == ".safetensors")
    blob = Path(json.loads((first / "entcal_source.json").read_text())["snapshot"]) / weights.name
    assert os.path.samefile(os.path.realpath(blob), weights)  # one inode: the cache's blob is the folder's file
    data = Path(os.path.realpath(blob)).read_bytes()
    try:
        Path(os.path.realpath(blob)).write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
        target = str(rd / "tables" / "per_step.parquet")
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "snakemake",
                target,
                "--cores",
                "1",
                "--configfile",
                str(Path(rd).parent / "paper_tiny.yaml"),
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        out = r.stdout + r.stderr
        assert r.returncode != 0 and f"{first}: its content changed since its job (download_model) wrote it" in out, (
            out[-3000:]
        )
    finally:
        Path(os.path.realpath(blob)).write_bytes(data)
