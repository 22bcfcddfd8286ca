"""Scoring the human reference after each prompt: per-token log loss and teacher-forced entropy.

One forward pass per batch serves every sampler setting of the model's grid: temperature and
truncation only transform the logits, so each setting's log loss and entropy come from the same
hidden states. The vocabulary projection is chunked (``chunk`` positions at a time).

For a truncation sampler (top_p, top_k, min_p, typical, eta; transformers' own warpers) the log loss
of a reference token outside the kept support is infinite. We record which tokens fall outside and
report the log loss of the stated smoothing p_eps = (1 - eps) p_trunc + eps p_tau (eps =
``scoring.truncation_epsilon``), p_tau being the untruncated distribution at the same temperature.
Plain (ancestral) settings are scored exactly, without smoothing.

Output of :func:`score_file` (``scores/{dataset}/{model}.parquet``), one row per prompt x sampler setting:

- example_id (int), setting (str: slug such as ``ancestral-t0.8`` or ``top_p0.9-t1``), sampler (str),
  sampler_param (float, NaN for ancestral), temperature (float), prompt_len (int), n_tokens (int);
- token_ids (list[int]): the reference tokens;
- logloss (list[float32]): -log p(y_t | prompt, y_<t) under the setting's distribution (smoothed for
  truncation), nats;
- tf_entropy (list[float32]): entropy of the setting's distribution at each reference position;
- n_outside (int): reference tokens outside a truncation's support (0 for ancestral).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from entcal.generate import sampling_processors, select_examples
from entcal.metrics import token_logloss_entropy

log = logging.getLogger(__name__)


def right_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids, mask


def setting_stats(
    logits: torch.Tensor, targets: torch.Tensor, setting: dict, epsilon: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log loss, entropy, outside-support mask) of one sampler setting at each position.

    ``logits``: (N, V); ``targets``: (N,); ``setting``: sampler, temperature, optional param.
    """
    x = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    tau = float(setting["temperature"])
    scores = x
    for proc in sampling_processors(setting["sampler"], tau, setting.get("param")):
        scores = proc(targets[:, None], scores)  # the warpers ignore input_ids
    nll, ent = token_logloss_entropy(scores, targets)  # the distribution the sampler draws from
    outside = torch.isinf(nll)
    if setting["sampler"] != "ancestral" and epsilon > 0:
        t_full = torch.log_softmax(x / tau, -1).gather(-1, targets[:, None])[:, 0]
        nll = -torch.logaddexp(-nll + np.log1p(-epsilon), t_full + np.log(epsilon))
    return nll, ent, outside


@torch.inference_mode()
def score_settings(
    model,
    pairs: list[tuple[list[int], list[int]]],
    settings: list[dict],
    batch_size: int,
    pad_id: int,
    epsilon: float,
    chunk: int = 256,
) -> list[dict]:
    """Per pair and setting: log loss, entropy and outside-support flags at the reference tokens.

    Returns one dict per pair with arrays of shape (len(settings), n_ref): ``logloss``,
    ``tf_entropy``, ``outside``.
    """
    base = getattr(model, model.base_model_prefix)
    head = model.get_output_embeddings()
    device = next(model.parameters()).device
    out = []
    for b in range(0, len(pairs), batch_size):
        batch = pairs[b : b + batch_size]
        ids, mask = right_pad([p + r for p, r in batch], pad_id)
        ids, mask = ids.to(device), mask.to(device)
        hidden = base(input_ids=ids, attention_mask=mask).last_hidden_state
        for i, (p, r) in enumerate(batch):
            h = hidden[i, len(p) - 1 : len(p) - 1 + len(r)]
            tgt = ids[i, len(p) : len(p) + len(r)]
            res = {k: np.empty((len(settings), len(r)), dtype=np.float32 if k != "outside" else bool)
                   for k in ("logloss", "tf_entropy", "outside")}  # fmt: skip
            for start in range(0, len(r), chunk):
                logits = head(h[start : start + chunk])
                for k, st in enumerate(settings):
                    nll, ent, outside = setting_stats(logits, tgt[start : start + chunk], st, epsilon)
                    sl = slice(start, start + chunk)
                    res["logloss"][k, sl], res["tf_entropy"][k, sl] = nll.cpu().numpy(), ent.cpu().numpy()
                    res["outside"][k, sl] = outside.cpu().numpy()
            out.append(res)
    return out


def score_file(
    model_dir: str,
    model_name: str,
    examples_path: str,
    out_path: str,
    *,
    settings: list[dict],
    prompt_tokens: int,
    max_new_tokens: int,
    min_reference_tokens: int,
    n_prompts: int,
    batch_size: int,
    dtype: str,
    device: str,
    threads: int = 1,
    epsilon: float = 1e-3,
) -> None:
    """Score one model x dataset at every sampler setting; write Parquet plus JSON sidecar.

    ``settings``: dicts with slug, sampler, temperature and (for truncation) param.
    """
    from entcal.models import load_model

    torch.set_num_threads(threads)
    model, tok = load_model(model_dir, model_name, dtype=dtype, device=device)
    examples = pd.read_parquet(examples_path)
    chosen = select_examples(tok, examples, prompt_tokens, max_new_tokens, min_reference_tokens, n_prompts)
    t0 = time.time()
    scored = score_settings(model, [(p, r) for _, p, r in chosen], settings, batch_size, tok.pad_token_id, epsilon)
    seconds = time.time() - t0
    rows = []
    for (example_id, p, r), s in zip(chosen, scored):
        for k, st in enumerate(settings):
            rows.append(
                {
                    "example_id": example_id,
                    "setting": st["slug"],
                    "sampler": st["sampler"],
                    "sampler_param": float(st["param"]) if st.get("param") is not None else np.nan,
                    "temperature": float(st["temperature"]),
                    "prompt_len": len(p),
                    "n_tokens": len(r),
                    "token_ids": r,
                    "logloss": s["logloss"][k],
                    "tf_entropy": s["tf_entropy"][k],
                    "n_outside": int(s["outside"][k].sum()),
                }
            )
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(out_path, index=False)
    n_tok = sum(len(p) + len(r) for _, p, r in chosen)
    sidecar = {
        "model": model_name,
        "settings": [st["slug"] for st in settings],
        "truncation_epsilon": epsilon,
        "n_prompts": len(chosen),
        "forward_tokens": n_tok,
        "seconds": round(seconds, 2),
        "tokens_per_second": round(n_tok / max(seconds, 1e-9), 1),
        "dtype": dtype,
    }
    Path(out_path).with_suffix(".json").write_text(json.dumps(sidecar, indent=2))
    log.info("scoring: %s", sidecar)
