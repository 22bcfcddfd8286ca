"""Shared fixtures: no hub access, tiny models built from configs (nothing is downloaded)."""

import os
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow_scripts"))

TEXTS = [
    "The quick brown fox jumps over the lazy dog. " * 20,
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))\n" * 20,
    "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 20,
]


def make_prompts(model_dir, examples, out, *, prompt_tokens, max_new_tokens, min_reference_tokens, n_prompts, **kw):
    """The prompts file a select_prompts job would write for these examples (a DataFrame or a path)."""
    import pandas as pd

    from entcal.prompt_jobs import select_prompts_file

    out = Path(out)
    if isinstance(examples, pd.DataFrame):
        from entcal.files import write_parquet

        write_parquet(examples, out.with_suffix(".examples.parquet"))  # with its sidecar, as prepare_dataset writes it
        examples = out.with_suffix(".examples.parquet")
    select_prompts_file(
        str(model_dir),
        "tiny",
        str(examples),
        str(out),
        prompt_tokens=prompt_tokens,
        max_new_tokens=max_new_tokens,
        min_reference_tokens=min_reference_tokens,
        n_prompts=n_prompts,
        **kw,
    )
    return out


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from entcal.tokenization import train_bpe

    return train_bpe(TEXTS, vocab_size=300)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer):
    """A save_pretrained folder (Llama-style, V=300) standing in for a hub or local model."""
    from entcal.models import build_model

    d = tmp_path_factory.mktemp("tiny_model")
    model = build_model(
        {"type": "llama", "hidden_size": 16, "layers": 2, "heads": 2, "ffn": 32},
        vocab_size=len(tiny_tokenizer),
        max_positions=256,
        seed=1,
    )
    model.save_pretrained(d)
    tiny_tokenizer.save_pretrained(d)
    return d
