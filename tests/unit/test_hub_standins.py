"""Stand-ins laid out as the real hub repositories are, file by file, through download -> select_prompts ->
generate -> score on CPU (tiny random weights; every other config value as the real repository states it).

EleutherAI/pythia-410m at a step branch (``step143000``, the paper's final checkpoint): the step branches
publish ``config.json``, ``pytorch_model.bin``, ``special_tokens_map.json``, ``tokenizer.json`` and
``tokenizer_config.json`` (and ``.gitattributes``), no safetensors and no ``generation_config.json``
(the hub's file listing of pythia-1.4b@step50000; its main branch later gained ``model.safetensors``).
The config values are those of pythia-410m's ``config.json``; only the sizes are shrunk.
"""

import fnmatch
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from entcal.files import write_parquet
from entcal.hub import BIN_PATTERNS, DEFAULT_PATTERNS, download_model
from entcal.generation_jobs import generate_file
from entcal.score_jobs import score_file
from entcal.prompt_jobs import select_prompts_file

COMMIT = "3f6bdfd7fd9f0c1e3a4b5c6d7e8f90112233aabb"

# EleutherAI/pythia-410m config.json (hub, main), sizes shrunk: hidden_size 1024 -> 32, intermediate_size
# 4096 -> 128, num_attention_heads 16 -> 4, num_hidden_layers 24 -> 2, vocab_size 50304 -> 320 (the real one
# is also padded past its tokenizer's 50277 tokens)
PYTHIA_410M_CONFIG = {
    "architectures": ["GPTNeoXForCausalLM"],
    "bos_token_id": 0,
    "eos_token_id": 0,
    "hidden_act": "gelu",
    "hidden_size": 32,
    "initializer_range": 0.02,
    "intermediate_size": 128,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 2048,
    "model_type": "gpt_neox",
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "rotary_emb_base": 10000,
    "rotary_pct": 0.25,
    "tie_word_embeddings": False,
    "torch_dtype": "float16",
    "transformers_version": "4.24.0",
    "use_cache": True,
    "use_parallel_residual": True,
    "vocab_size": 320,
}
# EleutherAI/pythia-*: tokenizer_config.json (at the step branches) and special_tokens_map.json, as published
PYTHIA_TOKENIZER_CONFIG = {
    "add_prefix_space": False,
    "bos_token": "<|endoftext|>",
    "clean_up_tokenization_spaces": True,
    "eos_token": "<|endoftext|>",
    "model_max_length": 1000000000000000019884624838656,
    "tokenizer_class": "GPTNeoXTokenizer",
    "unk_token": "<|endoftext|>",
}
PYTHIA_SPECIAL_TOKENS = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
PYTHIA_STEP_FILES = [
    ".gitattributes",
    "config.json",
    "pytorch_model.bin",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
]


def warm_cache(cache, files: dict, repo: str, ref: str):
    """The huggingface_hub cache a completed snapshot_download of ``repo`` at branch ``ref`` leaves behind."""
    root = cache / f"models--{repo.replace('/', '--')}"
    snap = root / "snapshots" / COMMIT
    for i, (name, src) in enumerate(sorted(files.items())):
        blob = root / "blobs" / f"blob{i:03d}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, blob)
        (snap / name).parent.mkdir(parents=True, exist_ok=True)
        (snap / name).symlink_to(blob)
    (root / "refs").mkdir(parents=True)
    (root / "refs" / ref).write_text(COMMIT)


@pytest.fixture(scope="module")
def pythia_step_branch(tmp_path_factory):
    """A stand-in of EleutherAI/pythia-410m@step143000: its files, its config values, random tiny weights."""
    from transformers import AutoModelForCausalLM, GPTNeoXConfig

    from conftest import TEXTS
    from entcal.tokenization import train_bpe

    d = tmp_path_factory.mktemp("pythia_src")
    tok = train_bpe(TEXTS, vocab_size=300)
    assert tok.convert_tokens_to_ids("<|endoftext|>") == 0  # Pythia's bos = eos = unk = 0
    tok.save_pretrained(d)
    (d / "tokenizer_config.json").write_text(json.dumps(PYTHIA_TOKENIZER_CONFIG, indent=2))
    (d / "special_tokens_map.json").write_text(json.dumps(PYTHIA_SPECIAL_TOKENS))
    (d / "config.json").write_text(json.dumps(PYTHIA_410M_CONFIG, indent=2))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(GPTNeoXConfig.from_pretrained(d))
    torch.save(model.state_dict(), d / "pytorch_model.bin")
    (d / ".gitattributes").write_text("*.bin filter=lfs diff=lfs merge=lfs -text\n")
    # what snapshot_download leaves in the cache: the files its patterns take (safetensors first; a revision
    # without them is fetched again with the .bin patterns), never .gitattributes
    files = {
        name: d / name
        for name in PYTHIA_STEP_FILES
        if any(fnmatch.fnmatch(name, pat) for pat in DEFAULT_PATTERNS + BIN_PATTERNS)
    }
    cache = tmp_path_factory.mktemp("hf_cache")
    warm_cache(cache, files, "EleutherAI/pythia-410m", "step143000")
    return cache


def test_a_pythia_step_branch_runs_from_download_to_scores(pythia_step_branch, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = download_model(
        "pythia_410m",
        "EleutherAI/pythia-410m",
        "step143000",
        str(tmp_path / "models" / "pythia_410m"),
        cache_dir=str(pythia_step_branch),
    )
    src = json.loads((out / "entcal_source.json").read_text())
    assert (src["revision"], src["commit"]) == ("step143000", COMMIT)  # the branch and the commit it resolved to
    assert sorted(p.name for p in out.iterdir() if p.name != "entcal_source.json") == sorted(
        f for f in PYTHIA_STEP_FILES if f != ".gitattributes"
    )
    assert not list(out.glob("*.safetensors"))

    texts = [("The quick brown fox jumps over the lazy dog. " * (4 + i)) for i in range(6)]
    ex = pd.DataFrame(
        {
            "example_id": range(6),
            "doc_id": [f"d{i}" for i in range(6)],
            "char_start": 0,
            "prefix": "",
            "instruction": "",
            "text": texts,
        }
    )
    write_parquet(ex, tmp_path / "examples.parquet")
    prompts = tmp_path / "prompts.parquet"
    select_prompts_file(
        str(out),
        "pythia_410m",
        str(tmp_path / "examples.parquet"),
        str(prompts),
        prompt_tokens=12,
        max_new_tokens=16,
        min_reference_tokens=16,
        n_prompts=4,
        max_context=4096,
    )
    side = json.loads(prompts.with_suffix(".json").read_text())
    # Pythia's own 2048-token context, not the configured 4096
    assert (side["model_context"], side["max_context"], side["max_context_configured"]) == (2048, 2048, 4096)
    p = pd.read_parquet(prompts)
    assert len(p) == 4 and (p["prompt_len"] == 12).all()  # GPT-NeoX's tokenizer adds no BOS

    gen = tmp_path / "gen.parquet"
    generate_file(
        str(out),
        "pythia_410m",
        str(prompts),
        str(gen),
        sampler="ancestral",
        temperature=1.0,
        max_new_tokens=16,
        batch_size=2,
        seed=0,
        stop_at_eos=True,
        dtype="float32",
        device="cpu",
    )
    g = pd.read_parquet(gen)
    meta = json.loads(gen.with_suffix(".json").read_text())
    assert meta["end_ids"] == [0]  # no generation_config.json: the tokenizer's eos, <|endoftext|>
    assert g["example_id"].tolist() == p["example_id"].tolist()
    for row in g.itertuples():
        ent = row.entropy
        assert len(ent) == row.n_tokens and all(0 <= e <= torch.log(torch.tensor(320.0)).item() + 1e-5 for e in ent)
        assert (0 in list(row.token_ids)) == bool(row.stopped_at_eos)

    scores = tmp_path / "scores.parquet"
    settings = [{"slug": "ancestral-t1", "sampler": "ancestral", "temperature": 1.0}]
    score_file(
        str(out),
        "pythia_410m",
        str(prompts),
        str(scores),
        settings=settings,
        batch_size=2,
        dtype="float32",
        device="cpu",
    )
    s = pd.read_parquet(scores)
    assert s["token_ids"].map(list).tolist() == p["reference_ids"].map(list).tolist()
    for ll, ref in zip(s["logloss"], p["reference_ids"]):
        assert len(ll) == len(ref) == 16 and min(ll) > 0


def test_download_patterns_take_what_the_grid_repositories_publish_and_skip_their_raw_checkpoints():
    """Files of meta-llama/Llama-3.1-8B-Instruct (sharded safetensors with their index, the original/ Meta
    checkpoint) and of a Pythia step branch: the patterns take the weights transformers loads, the configs and
    the tokenizer, never the 16 GB original/consolidated.00.pth; the .bin fallback takes Pythia's weights."""
    llama = [
        "config.json",
        "generation_config.json",
        "model-00001-of-00004.safetensors",
        "model-00004-of-00004.safetensors",
        "model.safetensors.index.json",
        "original/consolidated.00.pth",
        "original/params.json",
        "original/tokenizer.model",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "LICENSE",
        "README.md",
        "USE_POLICY.md",
        ".gitattributes",
    ]

    def taken(files, patterns):
        return sorted(f for f in files if any(fnmatch.fnmatch(f, pat) for pat in patterns))

    got = taken(llama, DEFAULT_PATTERNS)
    assert "original/consolidated.00.pth" not in got and "model.safetensors.index.json" in got
    assert {"model-00001-of-00004.safetensors", "generation_config.json", "tokenizer.json"} <= set(got)
    assert "pytorch_model.bin" not in taken(PYTHIA_STEP_FILES, DEFAULT_PATTERNS)
    assert "pytorch_model.bin" in taken(PYTHIA_STEP_FILES, DEFAULT_PATTERNS + BIN_PATTERNS)


# meta-llama/Llama-3.1-8B-Instruct: config.json and generation_config.json as published, sizes shrunk
# (hidden_size 4096 -> 16, intermediate_size 14336 -> 32, heads 32/8 -> 2/1, layers 32 -> 1, head_dim 128 -> 8);
# the vocabulary stays 128,256, so the three end ids are the real ones
LLAMA31_INSTRUCT_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009],
    "hidden_act": "silu",
    "hidden_size": 16,
    "head_dim": 8,
    "initializer_range": 0.02,
    "intermediate_size": 32,
    "max_position_embeddings": 131072,
    "mlp_bias": False,
    "model_type": "llama",
    "num_attention_heads": 2,
    "num_hidden_layers": 1,
    "num_key_value_heads": 1,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.42.3",
    "use_cache": True,
    "vocab_size": 128256,
}
LLAMA31_INSTRUCT_GENERATION = {
    "bos_token_id": 128000,
    "do_sample": True,
    "eos_token_id": [128001, 128008, 128009],
    "temperature": 0.6,
    "top_p": 0.9,
    "transformers_version": "4.42.3",
}


def llama3_tokenizer():
    """A byte-level BPE with Llama 3's id layout: 128,000 ordinary tokens (the byte alphabet, then unreachable
    fillers), then the 256 special tokens at their real ids (<|begin_of_text|> 128000, <|end_of_text|> 128001,
    <|eom_id|> 128008, <|eot_id|> 128009, reserved ones between), BOS added in front as Llama 3's does."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab.update({f"filler{i}": i for i in range(len(vocab), 128000)})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    names = {0: "<|begin_of_text|>", 1: "<|end_of_text|>", 8: "<|eom_id|>", 9: "<|eot_id|>"}
    reserved = iter(range(256))
    special = [names.get(i) or f"<|reserved_special_token_{next(reserved)}|>" for i in range(256)]
    tok.add_special_tokens([AddedToken(t, special=True) for t in special])
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", 128000)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")


def test_a_sharded_llama31_instruct_snapshot_runs_from_download_to_scores(tmp_path, monkeypatch):
    """Sharded safetensors with their index, generation_config.json's three end ids: downloaded as published
    (the original/ Meta checkpoint left out by the patterns), every shard loaded, generation stopping at
    128001, 128008 and 128009 and at nothing else."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text(json.dumps(LLAMA31_INSTRUCT_CONFIG))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(LlamaConfig.from_pretrained(src))
    model.save_pretrained(src, max_shard_size="5MB")  # 16 MB of float32 weights: shards and their index
    (src / "config.json").write_text(json.dumps(LLAMA31_INSTRUCT_CONFIG))
    (src / "generation_config.json").write_text(json.dumps(LLAMA31_INSTRUCT_GENERATION))
    tok = llama3_tokenizer()
    tok.save_pretrained(src)
    assert tok.convert_tokens_to_ids(["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"]) == [128001, 128008, 128009]
    shards = sorted(p.name for p in src.glob("model-*.safetensors"))
    assert len(shards) >= 2 and (src / "model.safetensors.index.json").is_file()
    files = {p.name: p for p in src.iterdir() if any(fnmatch.fnmatch(p.name, pat) for pat in DEFAULT_PATTERNS)}
    warm_cache(tmp_path / "cache", files, "meta-llama/Llama-3.1-8B-Instruct", "main")
    out = download_model(
        "llama3_8b_instruct",
        "meta-llama/Llama-3.1-8B-Instruct",
        "main",
        str(tmp_path / "m"),
        cache_dir=str(tmp_path / "cache"),
    )
    assert sorted(p.name for p in out.glob("model-*.safetensors")) == shards

    texts = [("The quick brown fox jumps over the lazy dog. " * (2 + i)) for i in range(4)]
    ex = pd.DataFrame(
        {
            "example_id": range(4),
            "doc_id": [f"d{i}" for i in range(4)],
            "char_start": 0,
            "prefix": "",
            "instruction": "",
            "text": texts,
        }
    )
    write_parquet(ex, tmp_path / "examples.parquet")
    prompts = tmp_path / "prompts.parquet"
    select_prompts_file(
        str(out),
        "llama3_8b_instruct",
        str(tmp_path / "examples.parquet"),
        str(prompts),
        prompt_tokens=12,
        max_new_tokens=12,
        min_reference_tokens=12,
        n_prompts=3,
        max_context=4096,
    )
    p = pd.read_parquet(prompts)
    assert len(p) == 3 and all(list(x)[0] == 128000 for x in p["prompt_ids"])  # the BOS, then 12 text tokens
    gen = tmp_path / "gen.parquet"
    generate_file(
        str(out),
        "llama3_8b_instruct",
        str(prompts),
        str(gen),
        sampler="ancestral",
        temperature=1.0,
        max_new_tokens=12,
        batch_size=3,
        seed=0,
        stop_at_eos=True,
        dtype="float32",
        device="cpu",
    )
    meta = json.loads(gen.with_suffix(".json").read_text())
    assert meta["end_ids"] == [128001, 128008, 128009]
    g = pd.read_parquet(gen)
    for row in g.itertuples():
        ends = [t for t in row.token_ids if t in (128001, 128008, 128009)]
        assert bool(row.stopped_at_eos) == bool(ends) and (not ends or list(row.token_ids)[-1] == ends[0])
        assert len(row.entropy) == row.n_tokens and max(row.entropy) <= np.log(128256) + 1e-4
    scores = tmp_path / "scores.parquet"
    score_file(
        str(out),
        "llama3_8b_instruct",
        str(prompts),
        str(scores),
        batch_size=3,
        dtype="float32",
        device="cpu",
        settings=[{"slug": "ancestral-t1", "sampler": "ancestral", "temperature": 1.0}],
    )
    s = pd.read_parquet(scores)
    assert s["token_ids"].map(list).tolist() == p["reference_ids"].map(list).tolist()
    # a random model over 128,256 tokens: the reference log loss sits near log V
    assert abs(np.mean([np.mean(x) for x in s["logloss"]]) - np.log(128256)) < 1.0


def test_pythia_prompts_follow_the_authors_rule_under_authors_and_its_own_context_under_exact(
    pythia_step_branch, tmp_path, monkeypatch
):
    """The paper's settings (128-token prompts, 2048 new tokens, references of at least 1024, a 4096 context) on
    CodeContests-like examples whose instructions make prompts of about 300 to 2,300 tokens. ``context_rule:
    authors`` keeps what the authors' load_datasets.py keeps for every model (prompt + 2048 < 4096), and the
    generation stops at Pythia's 2048-token context as vLLM stopped it; ``model`` (exact) keeps only the prompts
    its own context holds with its 1024 new tokens, a different document set."""
    from entcal.prompts import prefix_ids

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = download_model(
        "pythia_410m", "EleutherAI/pythia-410m", "step143000", str(tmp_path / "m"), cache_dir=str(pythia_step_branch)
    )
    from entcal.models import load_tokenizer

    tok = load_tokenizer(out)
    word = "The quick brown fox jumps over the lazy dog. "
    instructions = [word * k for k in (11, 30, 38, 57, 70, 80, 92)]
    body = "def solve(n):\n    return sum(range(n)) * 2 + n\n" * 150  # well over 128 + 2048 tokens
    ex = pd.DataFrame(
        {
            "example_id": range(len(instructions)),
            "doc_id": [f"d{i}" for i in range(len(instructions))],
            "char_start": 0,
            "prefix": "",
            "instruction": instructions,
            "text": body,
        }
    )
    write_parquet(ex, tmp_path / "examples.parquet")
    pre = [len(prefix_ids(tok, "", ins, False)) for ins in instructions]
    assert min(pre) < 896 < max(pre) and any(1772 < p < 1920 for p in pre) and max(pre) > 1920  # both rules' sides
    # the authors' rule, computed here from the token counts: prompt (template + 128) + 2048 < 4096
    authors = [i for i, p in enumerate(pre) if p + 128 + 2048 < 4096]
    ours = [i for i, p in enumerate(pre) if p + 128 + 1024 < 2048]  # within its own 2048 with its 1024 new tokens
    assert authors != ours
    picked = {}
    for rule, new in (("authors", 2048), ("model", 1024)):
        path = tmp_path / f"prompts_{rule}.parquet"
        select_prompts_file(
            str(out),
            "pythia_410m",
            str(tmp_path / "examples.parquet"),
            str(path),
            prompt_tokens=128,
            max_new_tokens=new,
            min_reference_tokens=1024,
            n_prompts=len(instructions),
            max_context=4096,
            context_rule=rule,
        )
        picked[rule] = pd.read_parquet(path)
        side = json.loads(path.with_suffix(".json").read_text())
        assert side["context_rule"] == rule and side["max_context"] == (4096 if rule == "authors" else 2048)
    assert picked["authors"]["example_id"].tolist() == authors
    assert picked["model"]["example_id"].tolist() == ours
    assert (picked["authors"]["reference_len"] == 2048).all() and (picked["model"]["reference_len"] == 1024).all()

    # generation under the authors' rule stops where prompt + generation fill the 2048-token context
    short = picked["authors"][picked["authors"]["prompt_len"] > 1900].head(1)
    assert len(short) == 1
    write_parquet(short.reset_index(drop=True), tmp_path / "long.parquet")
    gen = tmp_path / "gen.parquet"
    generate_file(
        str(out),
        "pythia_410m",
        str(tmp_path / "long.parquet"),
        str(gen),
        sampler="ancestral",
        temperature=1.0,
        max_new_tokens=2048 - int(short["prompt_len"].iloc[0]) + 24,  # past the context: capped there
        batch_size=1,
        seed=0,
        stop_at_eos=False,
        dtype="float32",
        device="cpu",
        stop_at_context=True,
    )
    g = pd.read_parquet(gen)
    assert int(g["n_tokens"].iloc[0]) == 2048 - int(short["prompt_len"].iloc[0]) == len(g["entropy"].iloc[0])
    meta = json.loads(gen.with_suffix(".json").read_text())
    assert meta["generated_tokens"] == int(g["n_tokens"].iloc[0]) and meta["stop_at_context"] == 2048
