"""Monte Carlo labels of future entropy, and the fit data of the tilts' alphas, from a model.

- :func:`make_prefixes`: prefixes cut from calibration-split human text at the positions the
  evaluation generates at (prompt + step), chosen by the evaluation's own example selection
  (:func:`entcal.prompts.select_examples`);
- :func:`label_prefixes`: for each prefix, the top-K candidates and ``rollouts`` continuations of
  ``horizon`` tokens each, sampled with the main experiment's generation code; the label is the mean
  of the summed per-step entropies along the continuations (the lower-variance unbiased estimator of
  :mod:`entcal.exact`);
- :func:`fit_data`: every position of further calibration windows, teacher-forced: log p̂, top-K
  candidates, the head's and the lookahead's f on them, the human token and the step, for
  :func:`entcal.tilt.fit_alphas`.
"""

from __future__ import annotations

import logging
import random

import numpy as np
import pandas as pd
import torch

from entcal.generate import sample_with_entropy
from entcal.logs import Progress
from entcal.lookahead import output_logits, teacher_forced
from entcal.models import input_device
from entcal.predictor import FutureEntropyHead
from entcal.prompts import pad, select_examples

log = logging.getLogger(__name__)


def make_prefixes(
    tok,
    windows: pd.DataFrame,
    prompt_tokens: int,
    max_len: int,
    per_window: int,
    n_windows: int,
    heldout_fraction: float,
    seed: int,
    chat: bool = False,
) -> list[dict]:
    """Prefixes of calibration-split windows: the tokenizer's specials + the window's first
    ``prompt_tokens + step`` tokens, ``step`` uniform in [0, max_len) and within the window (the
    evaluation's generation steps). The windows are the first ``n_windows`` that hold
    ``prompt_tokens + 1`` tokens; a ``heldout_fraction`` of them (not of the prefixes) is kept for testing."""
    rng = random.Random(seed)
    chosen = select_examples(tok, windows, prompt_tokens, max_len, 1, n_windows, chat)
    rows = []
    for used, (window_id, prompt, reference) in enumerate(chosen):
        split = "test" if used < round(heldout_fraction * n_windows) else "train"
        for step in sorted(rng.sample(range(len(reference)), min(per_window, len(reference)))):
            rows.append({"window_id": window_id, "split": split, "step": step, "prefix_ids": prompt + reference[:step]})
    for i, r in enumerate(rows):
        r["prefix_id"] = i
    return rows


@torch.inference_mode()
def last_hidden(
    model, seqs: list[list[int]], pad_id: int, batch_size: int, layer: int | None = None, on_batch=None
) -> torch.Tensor:
    """The hidden state at the end of each sequence, (N, d), float32: the last (final norm applied), or the
    output of decoder layer ``layer`` (1-based; ``hidden_states[layer]`` of transformers).
    ``on_batch(sequences_done, tokens_done)`` after each batch (progress)."""
    base = getattr(model, model.base_model_prefix)
    device = input_device(model)
    out = []
    for b in range(0, len(seqs), batch_size):
        batch = seqs[b : b + batch_size]
        ids, mask = pad(batch, pad_id, side="right")
        res = base(input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=layer is not None)
        h = res.last_hidden_state if layer is None else res.hidden_states[layer]
        last = torch.tensor([len(s) - 1 for s in batch], device=h.device)
        out.append(h[torch.arange(len(batch), device=h.device), last].float())
        if on_batch is not None:
            on_batch(b + len(batch), sum(map(len, seqs[: b + len(batch)])))
    return torch.cat(out)


@torch.inference_mode()
def label_prefixes(
    model,
    tok,
    prefixes: list[dict],
    *,
    candidates: int,
    rollouts: int,
    horizon: int,
    batch_size: int,
    seed: int,
    stop_at_eos: bool = True,
    end_ids: list[int] | None = None,
) -> tuple[pd.DataFrame, int]:
    """Monte Carlo labels of the k-step future entropy after each top candidate of each prefix.

    Returns (one row per prefix x candidate, forward tokens spent). The rollouts are sampled by
    :func:`entcal.generate.sample_with_entropy` (the main experiment's generation code) at
    temperature 1; the label is the mean over rollouts of the summed per-step entropies of the
    ``horizon`` steps after the candidate (a rollout that ends at eos contributes its entropies up to
    the eos). The first of those entropies is the exact one-step lookahead (``onestep_entropy``).
    """
    head = model.get_output_embeddings()
    h = last_hidden(model, [p["prefix_ids"] for p in prefixes], tok.pad_token_id, batch_size)
    logp = torch.log_softmax(head(h.to(head.weight.dtype)).float(), -1)
    top = logp.topk(candidates, -1)
    ends = set(([tok.eos_token_id] if end_ids is None else end_ids) if stop_at_eos else [])
    jobs = []  # (prefix index, rank, candidate)
    for i in range(len(prefixes)):
        for r in range(candidates):
            c = int(top.indices[i, r])
            if c not in ends:
                jobs.append((i, r, c))
    prompts = [prefixes[i]["prefix_ids"] + [c] for i, _, c in jobs for _ in range(rollouts)]
    # sort by length so left-padded batches waste little; results are put back in order
    order = sorted(range(len(prompts)), key=lambda j: len(prompts[j]))
    progress = Progress(f"labels: rollouts of {horizon} tokens", len(prompts), unit="rollouts")
    res = sample_with_entropy(
        model,
        tok,
        [prompts[j] for j in order],
        temperature=1.0,
        max_new_tokens=horizon,
        batch_size=batch_size,
        seed=seed,
        stop_at_eos=stop_at_eos,
        end_ids=sorted(ends),
        on_step=progress.update,
    )
    progress.finish()
    sums = np.empty(len(prompts))
    first = np.empty(len(prompts))
    for j, r in zip(order, res):
        sums[j] = float(np.sum(r["entropy"], dtype=np.float64))
        first[j] = float(r["entropy"][0])
    sums, first = sums.reshape(-1, rollouts), first.reshape(-1, rollouts)
    by_job = {(i, r): n for n, (i, r, _) in enumerate(jobs)}
    rows = []
    for i, p in enumerate(prefixes):
        for r in range(candidates):
            n = by_job.get((i, r))
            rows.append(
                {
                    "prefix_id": p["prefix_id"],
                    "window_id": p["window_id"],
                    "split": p["split"],
                    "step": p["step"],
                    "prefix_len": len(p["prefix_ids"]),
                    "rank": r,
                    "candidate": int(top.indices[i, r]),
                    "logprob": float(top.values[i, r]),
                    "onestep_entropy": float(first[n, 0]) if n is not None else 0.0,
                    "label": float(sums[n].mean()) if n is not None else 0.0,
                    "label_rollouts": sums[n].astype(np.float32) if n is not None else np.zeros(rollouts, np.float32),
                }
            )
    spent = sum(len(p["prefix_ids"]) for p in prefixes) + sum(len(q) + horizon for q in prompts)
    return pd.DataFrame(rows), int(spent)


@torch.inference_mode()
def fit_data(
    model,
    pairs: list[tuple[list[int], list[int]]],
    k: int,
    head: FutureEntropyHead,
    lookahead: bool,
    batch_size: int,
    pad_id: int,
    on_batch=None,
) -> dict[str, torch.Tensor]:
    """Every scored position of the pairs: log p̂ (N, V), top-k candidates (N, k), the head's and
    (optionally) the lookahead's f on them (N, k), the human token (N,) and the step (N,), on the CPU.
    ``on_batch(pairs_done, tokens_done)`` after each batch (progress)."""
    acc: dict[str, list] = {k_: [] for k_ in ("logp", "top", "f_head", "f_look", "target", "step")}
    for b, ids, h, top, f in teacher_forced(model, pairs, batch_size, pad_id, k if lookahead else 0):
        for i, (p, r) in enumerate(pairs[b : b + batch_size]):
            s, n = len(p), len(r)
            lp = torch.log_softmax(output_logits(model, h[i, :n]).float(), -1)
            t = lp.topk(k, -1).indices if not lookahead else top[i, :n]
            acc["logp"].append(lp.cpu())
            acc["top"].append(t.cpu())
            acc["f_head"].append(head(h[i, :n], lp.gather(-1, t), t).cpu())
            if lookahead:
                acc["f_look"].append(f[i, :n].cpu())
            acc["target"].append(ids[i, s : s + n].cpu())
            acc["step"].append(torch.arange(n))
        if on_batch is not None:
            done = min(b + batch_size, len(pairs))
            on_batch(done, sum(len(p) + len(r) for p, r in pairs[:done]))
    return {k_: torch.cat(v) for k_, v in acc.items() if v}
