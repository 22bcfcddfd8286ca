"""Scoring the human reference after each prompt: per-token log loss and teacher-forced entropy.

One forward pass per batch serves every temperature of the model's grid: the temperature only
rescales the logits, so log loss and entropy at each tau come from the same hidden states.
The vocabulary projection is chunked (:func:`entcal.metrics.chunked_logloss_entropy`).

Output of :func:`score_file` (``scores/{dataset}/{model}.parquet``), one row per prompt x temperature:

- example_id (int), temperature (float), prompt_len (int), n_tokens (int: reference tokens scored);
- token_ids (list[int]): the reference tokens;
- logloss (list[float32]): -log p_tau(y_t | prompt, y_<t), nats;
- tf_entropy (list[float32]): entropy of p_tau(. | prompt, y_<t), nats (teacher-forced entropy).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from entcal.generate import select_examples
from entcal.metrics import chunked_logloss_entropy

log = logging.getLogger(__name__)


def right_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids, mask


@torch.inference_mode()
def score_references(
    model,
    pairs: list[tuple[list[int], list[int]]],
    temperatures: list[float],
    batch_size: int,
    pad_id: int,
    chunk: int = 256,
) -> list[dict]:
    """For each (prompt_ids, reference_ids): per-temperature log loss and entropy at reference tokens.

    Returns one dict per pair: ``logloss`` and ``tf_entropy``, arrays of shape (len(temperatures), n_ref).
    Batches are right-padded, so every sequence keeps positions 0..len-1.
    """
    base = getattr(model, model.base_model_prefix)
    head = model.get_output_embeddings()
    device = next(model.parameters()).device
    out = []
    for b in range(0, len(pairs), batch_size):
        batch = pairs[b : b + batch_size]
        ids, mask = right_pad([p + r for p, r in batch], pad_id)
        ids, mask = ids.to(device), mask.to(device)
        hidden = base(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
        nll, ent = chunked_logloss_entropy(hidden, head, ids[:, 1:], temperatures, chunk=chunk)
        for i, (p, r) in enumerate(batch):
            sl = slice(len(p) - 1, len(p) - 1 + len(r))
            out.append({"logloss": nll[:, i, sl].cpu().numpy(), "tf_entropy": ent[:, i, sl].cpu().numpy()})
    return out


def score_file(
    model_dir: str,
    model_name: str,
    examples_path: str,
    out_path: str,
    *,
    temperatures: list[float],
    prompt_tokens: int,
    max_new_tokens: int,
    min_reference_tokens: int,
    n_prompts: int,
    batch_size: int,
    dtype: str,
    device: str,
    threads: int = 1,
) -> None:
    """Score one model x dataset at every temperature; write Parquet plus JSON sidecar."""
    from entcal.models import load_model

    torch.set_num_threads(threads)
    model, tok = load_model(model_dir, model_name, dtype=dtype, device=device)
    examples = pd.read_parquet(examples_path)
    chosen = select_examples(tok, examples, prompt_tokens, max_new_tokens, min_reference_tokens, n_prompts)
    t0 = time.time()
    scored = score_references(model, [(p, r) for _, p, r in chosen], temperatures, batch_size, tok.pad_token_id)
    seconds = time.time() - t0
    rows = []
    for (example_id, p, r), s in zip(chosen, scored):
        for k, tau in enumerate(temperatures):
            rows.append(
                {
                    "example_id": example_id,
                    "temperature": float(tau),
                    "prompt_len": len(p),
                    "n_tokens": len(r),
                    "token_ids": r,
                    "logloss": s["logloss"][k].astype(np.float32),
                    "tf_entropy": s["tf_entropy"][k].astype(np.float32),
                }
            )
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(out_path, index=False)
    n_tok = sum(len(p) + len(r) for _, p, r in chosen)
    sidecar = {
        "model": model_name,
        "temperatures": list(map(float, temperatures)),
        "n_prompts": len(chosen),
        "forward_tokens": n_tok,
        "seconds": round(seconds, 2),
        "tokens_per_second": round(n_tok / max(seconds, 1e-9), 1),
        "dtype": dtype,
    }
    Path(out_path).with_suffix(".json").write_text(json.dumps(sidecar, indent=2))
    log.info("scoring: %s", sidecar)
