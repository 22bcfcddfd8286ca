"""The file job of prompt selection: each model's prompts and human references from a dataset's examples, within
the model's own context -> prompts/{dataset}/{model}.parquet (columns: example_id, prompt_len, reference_len,
prompt_ids, reference_ids), with its JSON sidecar."""

from __future__ import annotations

import logging
import time

import pandas as pd

from entcal.files import check_file, write_parquet
from entcal.models import (
    effective_context,
    load_tokenizer,
    model_context,
)
from entcal.prompts import select_examples

log = logging.getLogger(__name__)
PROMPT_COLUMNS = ["example_id", "prompt_len", "reference_len", "prompt_ids", "reference_ids"]


def select_prompts_file(
    model_dir: str,
    model_name: str,
    examples_path: str,
    out_path: str,
    *,
    prompt_tokens: int,
    max_new_tokens: int,
    min_reference_tokens: int,
    n_prompts: int,
    chat: bool = False,
    max_context: int | None = None,
    text_rules: str = "paper",
    chat_instruction: str | None = None,
    context_rule: str = "model",
) -> None:
    """The prompts of one model x dataset (``prompts/{dataset}/{model}.parquet``), chosen once with the
    model's tokenizer and read by its generation, scoring and predictor jobs: one row per prompt, in
    example order: example_id, prompt_len, reference_len, prompt_ids, reference_ids (the human
    continuation, at most ``max_new_tokens``). A JSON sidecar records the settings and counts.
    ``context_rule``: ``model`` chooses within the model's own context where it is shorter than ``max_context``;
    ``authors`` with the configured ``max_context`` for every model, as the authors' selection did (the
    generation then stops at the model's own context)."""
    t0 = time.time()
    check_file(examples_path)
    tok = load_tokenizer(model_dir, model_name)
    configured = max_context
    if context_rule != "authors":
        max_context = effective_context(model_dir, max_context)
    if max_context != configured:
        log.info(
            "model %s: context %s tokens (its config.json), not the configured %s", model_name, max_context, configured
        )
    chosen = select_examples(
        tok,
        examples_path,
        prompt_tokens,
        max_new_tokens,
        min_reference_tokens,
        n_prompts,
        chat,
        max_context,
        text_rules,
        chat_instruction,
    )
    df = pd.DataFrame(
        {
            "example_id": [e for e, _, _ in chosen],
            "prompt_len": [len(p) for _, p, _ in chosen],
            "reference_len": [len(r) for _, _, r in chosen],
            "prompt_ids": [p for _, p, _ in chosen],
            "reference_ids": [r for _, _, r in chosen],
        }
    )[PROMPT_COLUMNS]
    side = {
        "model": model_name,
        "n_prompts": len(df),
        "requested": n_prompts,
        "prompt_tokens": prompt_tokens,
        "max_new_tokens": max_new_tokens,
        "min_reference_tokens": min_reference_tokens,
        "max_context": max_context,
        "max_context_configured": configured,
        "model_context": model_context(model_dir),
        "chat": chat,
        "chat_instruction": chat_instruction if chat else None,
        "text_rules": text_rules,
        "context_rule": context_rule,
        "mean_prompt_len": float(df["prompt_len"].mean()),
        "max_prompt_len": int(df["prompt_len"].max()),
        "seconds": round(time.time() - t0, 2),
    }
    log.info("prompts: %s", write_parquet(df, out_path, side))
