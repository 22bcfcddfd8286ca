"""Resumable generation and scoring: a killed job resumes from its last shard; bad shards are redone."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from entcal.generate import fixed_batches
from entcal.shards import ShardStore, group_shards

ROOT = Path(__file__).resolve().parents[2]


def test_shards_are_whole_batches():
    def shards(n, size, batch):
        return [
            ((s.start, s.stop), [(b.start, b.stop) for b in bs])
            for s, bs in group_shards(fixed_batches(n, batch), size)
        ]

    assert [s for s, _ in shards(10, 3, 2)] == [(0, 4), (4, 8), (8, 10)]
    assert shards(5, 1, 4) == [((0, 4), [(0, 4)]), ((4, 5), [(4, 5)])]
    # batches of different sizes (the memory plan's) are never split across shards
    planned = [slice(0, 5), slice(5, 7), slice(7, 8), slice(8, 12)]
    assert [(s.start, s.stop) for s, _ in group_shards(planned, 6)] == [(0, 7), (7, 12)]


def test_a_shard_is_used_only_when_whole_and_ours(tmp_path):
    out = tmp_path / "x.parquet"
    df = pd.DataFrame({"example_id": [3, 4], "v": [1.0, 2.0]})
    ShardStore(out, {"a": 1}).save(0, df, [3, 4])
    store = ShardStore(out, {"a": 1})
    pd.testing.assert_frame_equal(store.load(0, [3, 4]), df)
    assert store.load(0, [3, 5]) is None  # other examples
    assert ShardStore(out, {"a": 2}).load(0, [3, 4]) is None  # other settings or model
    data = store.path(0).read_bytes()
    store.path(0).write_bytes(data[: len(data) // 2])  # truncated
    assert store.load(0, [3, 4]) is None and store.redone == 2 and store.resumed == 1
    assert store.load(1, [7]) is None and store.redone == 2  # not written yet: no warning, not "redone"


KILL_SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys
    sys.path.insert(0, {scripts!r})
    import entcal.{module} as m
    kw = json.loads({kw!r})
    calls = {{"n": 0}}
    real = m.{inner}
    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == {die_at}:
            os.kill(os.getpid(), signal.SIGKILL)  # a real, abrupt kill in the middle of the job
        return real(*a, **k)
    m.{inner} = dying
    m.{func}(**kw)
    """
)


def _run_killed(module, func, inner, kw, die_at):
    code = KILL_SCRIPT.format(
        scripts=str(ROOT / "workflow_scripts"), module=module, func=func, inner=inner, kw=json.dumps(kw), die_at=die_at
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1")
    )
    assert r.returncode == -9, r.stderr[-2000:]  # killed by SIGKILL


@pytest.fixture(scope="module")
def examples(tmp_path_factory, tiny_model_dir):
    """The prompts file of 8 examples (prompt 6 tokens, references of 4 to 10)."""
    from conftest import TEXTS, make_prompts

    d = tmp_path_factory.mktemp("ex")
    texts = [t[i : i + 200] for t in TEXTS for i in (0, 40, 80)]
    ex = pd.DataFrame(
        {
            "example_id": range(len(texts)),
            "doc_id": "d",
            "char_start": 0,
            "prefix": "",
            "instruction": "",
            "text": texts,
        }
    )
    return make_prompts(
        tiny_model_dir,
        ex,
        d / "prompts.parquet",
        prompt_tokens=6,
        max_new_tokens=10,
        min_reference_tokens=4,
        n_prompts=8,
    )


def _gen_kw(model_dir, prompts, out):
    return dict(
        model_dir=str(model_dir),
        model_name="tiny",
        prompts_path=str(prompts),
        out_path=str(out),
        sampler="ancestral",
        temperature=1.0,
        max_new_tokens=10,
        batch_size=2,
        seed=5,
        stop_at_eos=False,
        dtype="float32",
        device="cpu",
        shard_size=2,
    )


def test_killed_generation_resumes_from_its_last_shard_and_matches_an_uninterrupted_run(
    tiny_model_dir, examples, tmp_path
):
    from entcal.generation_jobs import generate_file

    ref = tmp_path / "ref" / "g.parquet"
    generate_file(**_gen_kw(tiny_model_dir, examples, ref))
    assert json.loads(ref.with_suffix(".json").read_text())["shards"] == 4
    assert not Path(str(ref) + ".shards").exists()  # merged and cleaned up

    out = tmp_path / "run" / "g.parquet"
    _run_killed(
        "generation_jobs", "generate_file", "sample_with_entropy", _gen_kw(tiny_model_dir, examples, out), die_at=3
    )
    shard_dir = Path(str(out) + ".shards")
    assert sorted(p.name for p in shard_dir.iterdir()) == ["shard-00000.parquet", "shard-00001.parquet"]
    assert not out.exists()
    first = shard_dir / "shard-00000.parquet"
    stamp = first.stat().st_mtime_ns
    # corrupt the second finished shard: it must be detected and redone, never used
    data = (shard_dir / "shard-00001.parquet").read_bytes()
    (shard_dir / "shard-00001.parquet").write_bytes(data[:100])
    os.utime(first, ns=(stamp, stamp))
    generate_file(**_gen_kw(tiny_model_dir, examples, out))
    meta = json.loads(out.with_suffix(".json").read_text())
    assert (meta["shards"], meta["shards_resumed"], meta["shards_redone"]) == (4, 1, 1)
    a, b = pd.read_parquet(ref), pd.read_parquet(out)
    assert a["example_id"].tolist() == b["example_id"].tolist()
    assert a["token_ids"].map(list).tolist() == b["token_ids"].map(list).tolist()  # same samples, resumed or not
    for x, y in zip(a["entropy"], b["entropy"]):
        np.testing.assert_array_equal(x, y)


def test_killed_scoring_resumes(tiny_model_dir, examples, tmp_path):
    from entcal.score_jobs import score_file

    settings = [
        {"sampler": "ancestral", "temperature": 1.0, "slug": "ancestral-t1"},
        {"sampler": "top_k", "param": 5, "temperature": 0.8, "slug": "top_k5-t0.8"},
    ]
    kw = lambda out: dict(
        model_dir=str(tiny_model_dir),
        model_name="tiny",
        prompts_path=str(examples),  # noqa: E731
        out_path=str(out),
        settings=settings,
        batch_size=2,
        dtype="float32",
        device="cpu",
        shard_size=4,
    )
    ref = tmp_path / "ref" / "s.parquet"
    score_file(**kw(ref))
    out = tmp_path / "run" / "s.parquet"
    _run_killed("score_jobs", "score_file", "score_settings", kw(out), die_at=2)
    score_file(**kw(out))
    meta = json.loads(out.with_suffix(".json").read_text())
    assert (meta["shards"], meta["shards_resumed"], meta["shards_redone"]) == (2, 1, 0)
    a, b = pd.read_parquet(ref), pd.read_parquet(out)
    assert len(a) == len(b) == 16
    for x, y in zip(a["logloss"], b["logloss"]):
        np.testing.assert_allclose(x, y, atol=1e-6)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a machine without CUDA")
def test_a_generation_job_with_gpus_on_a_cpu_machine_fails_before_loading_anything(tiny_model_dir, examples, tmp_path):
    from entcal.generation_jobs import generate_file
    from entcal.models import DeviceError

    out = tmp_path / "g.parquet"
    with pytest.raises(DeviceError, match=r"expects a CUDA GPU \(1 GPU\(s\) in its resources\)"):
        generate_file(**{**_gen_kw(tiny_model_dir, examples, out), "device": "auto", "gpus": 1})
    assert not out.exists() and not Path(str(out) + ".shards").exists()
