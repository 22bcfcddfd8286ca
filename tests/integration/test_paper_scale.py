"""The paper grid's data path at its real sizes: full-size local stand-ins of WikiText-103 (29,567 articles),
WritingPrompts (272,600 stories) and CodeContests (13,610 problems) go through prepare_dataset with the
paper grid's own dataset settings, then prompt selection with the paper's generation settings (P = 128,
references of >= 1024 tokens, 2048 new tokens within a 4096-token context, N = 5000) under a locally
trained 32k-vocabulary BPE; the selected prompts are then batched by the memory plan of real model shapes.
"""

import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
import standins  # noqa: E402

pytestmark = pytest.mark.slow
BUILD = {
    "wikitext": standins.build_wikitext,
    "writingprompts": standins.build_writingprompts,
    "codecontests": standins.build_codecontests,
}


@pytest.fixture(scope="module")
def grid():
    from snakemake.utils import validate

    from entcal.config import resolve_fidelity

    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    validate(cfg, str(ROOT / "config" / "schema.yaml"), set_default=True)
    resolve_fidelity(cfg)  # as shipped: fidelity authors (the authors' text rules)
    return cfg


@pytest.fixture(scope="module")
def corpus():
    try:
        return standins.english_paragraphs(), standins.code_blocks()
    except RuntimeError as err:
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def tokenizer(corpus):
    tok = standins.train_tokenizer(*corpus)
    english = " ".join(corpus[0][:3000])
    assert len(tok) >= 32_000 and 3.5 < len(english) / len(tok(english)["input_ids"]) < 5.0  # ~4 characters per token
    return tok


@pytest.fixture(scope="module")
def real_tokenizers(tmp_path_factory):
    """The tokenizers of the demo's two real pretrained LMs, read from their installed GGUF files as the
    pipeline's conversion saves them: Gemma-3-270M (262,144 tokens, adds <bos>) and SmolLM2-135M
    (49,152 tokens, adds none)."""
    from entcal.gguf_convert import gguf_tokenizer

    demo = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    return {
        n: gguf_tokenizer(n, demo["models"][n], tmp_path_factory.mktemp(n))
        for n in ("gemma3_270m", "smollm2_135m_instruct")
    }


@pytest.mark.parametrize("dataset", ["wikitext", "writingprompts", "codecontests"])
def test_full_size_standins_give_the_papers_5000_prompts(dataset, grid, corpus, tokenizer, real_tokenizers, tmp_path):
    from entcal.data import prepare_dataset
    from entcal.batches import auto_batch_fn, generation_batches
    from entcal.memory import Budget, ModelShape
    from entcal.files import write_parquet
    from entcal.prompts import calibration_windows, length_order, select_examples

    paras, blocks = corpus
    t0 = time.time()
    raw = tmp_path / "raw"
    BUILD[dataset](raw, paras, blocks) if dataset == "codecontests" else BUILD[dataset](raw, paras)
    rows = sum(len(pd.read_parquet(f, columns=[]).index) for f in raw.rglob("train-*.parquet"))
    assert rows == {"wikitext": 29_567, "writingprompts": 272_600, "codecontests": 13_328}[dataset]
    t1 = time.time()
    spec = grid["datasets"][dataset]
    out = {k: tmp_path / f"{k}.parquet" for k in ("docs", "examples", "calibration")}
    prepare_dataset(
        spec,
        str(out["docs"]),
        str(out["examples"]),
        seed=0,
        raw_dir=str(raw),
        calibration_out=str(out["calibration"]),
        threads=2,
    )
    t2 = time.time()
    g = grid["generation"]
    chosen = select_examples(
        tokenizer,
        out["examples"],
        g["prompt_tokens"],
        g["max_new_tokens"],
        g["min_reference_tokens"],
        g["n_prompts"],
        False,
        g["max_context"],
        spec["text_rules"],
    )
    t3 = time.time()
    print(f"{dataset}: build {t1 - t0:.0f} s, prepare {t2 - t1:.0f} s, select {t3 - t2:.0f} s")

    assert len(chosen) == g["n_prompts"] == 5000
    ids = [e for e, _, _ in chosen]
    assert ids == sorted(ids)  # the first qualifying documents, in file order
    for _, p, r in chosen:
        assert len(p) + g["max_new_tokens"] < g["max_context"]  # the authors' strict context rule
        assert g["min_reference_tokens"] <= len(r) <= g["max_new_tokens"]
    docs = pd.read_parquet(out["docs"], columns=["doc_id", "split"])
    ex = pd.read_parquet(out["examples"], columns=["example_id", "doc_id", "char_start"])
    assert set(docs["split"]) == {"heldout"}  # no training split, and nothing set aside at preparation
    assert (ex["char_start"] == 0).all()  # whole documents, no character window
    # a calibrated model's windows: the documents after its 5000th qualifying one, never one of its prompts
    prompts = tmp_path / "prompts.parquet"
    write_parquet(pd.DataFrame({"example_id": ids}), prompts)
    windows = calibration_windows(out["calibration"], out["examples"], prompts)
    used = set(ex.set_index("example_id").loc[ids, "doc_id"])
    assert len(windows) > 150 and not used & set(windows["doc_id"])
    assert windows["example_id"].min() == max(ids) + 1

    # the memory plan batches these prompts for real shapes: Llama-2-13B on 2 GPUs, Qwen2.5-7B on 1
    shapes = yaml.safe_load((ROOT / "config" / "model_shapes.yaml").read_text())
    lens = sorted(len(p) for _, p, _ in chosen)
    assert lens == [len(chosen[i][1]) for i in length_order([p for _, p, _ in chosen])]
    for name, gpus in (("llama2_13b", 2), ("qwen25_7b", 1)):
        fits = auto_batch_fn(ModelShape.from_config(shapes[name]), Budget(gpus=gpus), g["max_new_tokens"], cap=128)
        batches = generation_batches(lens, g["max_new_tokens"], fits)
        assert sum(b.stop - b.start for b in batches) == 5000
        assert all(1 <= b.stop - b.start <= fits(lens[b.stop - 1]) for b in batches)

    # the same selection under real tokenizers: a BOS (Gemma) or none (SmolLM2), a 262k vocabulary
    for name, tok in real_tokenizers.items():
        t0 = time.time()
        real = select_examples(
            tok,
            out["examples"],
            g["prompt_tokens"],
            g["max_new_tokens"],
            g["min_reference_tokens"],
            g["n_prompts"],
            False,
            g["max_context"],
            spec["text_rules"],
        )
        print(f"{dataset} / {name}: select {time.time() - t0:.0f} s")
        assert len(real) == 5000 and [e for e, _, _ in real] == sorted(e for e, _, _ in real)
        bos = tok.bos_token_id if name == "gemma3_270m" else None
        for _, p, r in real:
            assert (p[0] == bos) if bos is not None else (tok.bos_token_id not in p)
            assert p.count(tok.bos_token_id) == (1 if bos is not None else 0)  # one BOS, at the start
            assert (
                len(p) + g["max_new_tokens"] < g["max_context"]
                and g["min_reference_tokens"] <= len(r) <= g["max_new_tokens"]
            )
            if dataset == "wikitext":  # no instruction: the special tokens, then the article's first 128 tokens
                assert len(p) == g["prompt_tokens"] + (
                    bos is not None and spec["text_rules"] == "paper"
                )  # authors: BOS counted
        top = max(max(p + r) for _, p, r in real)
        assert top < len(tok) and (top >= 49_152 if name == "gemma3_270m" else True)  # Gemma uses its large vocabulary
