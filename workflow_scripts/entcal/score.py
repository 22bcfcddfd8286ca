"""Scoring the human reference after each prompt: per-token log loss and teacher-forced entropy.

One forward pass per batch serves every sampler setting of the model's grid: temperature and
truncation only transform the logits, so each setting's log loss and entropy come from the same
hidden states. The vocabulary projection is chunked (``chunk`` positions at a time).

Calibrated samplers (``entcal.calibration``) are scored from the same pass: ``future_entropy`` tilts
the logits with the trained head's prediction on the same hidden state; ``one_step_lookahead`` adds
one batched forward of the top candidates over the pass's KV cache; ``mirostat`` runs its
controller teacher-forced along the reference (its surprise driven by the human tokens).

For a truncation sampler (top_p, top_k, min_p, typical, eta, and mirostat) the log loss
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

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from entcal.generate import TRUNCATION_WARPERS, fixed_batches, sampling_processors
from entcal.files import write_sidecar
from entcal.metrics import token_logloss_entropy, upcast
from entcal.models import input_device
from entcal.prompts import length_order, load_prompts, pad
from entcal.shards import ShardStore, group_shards, model_fingerprint

TRUNCATING = (*TRUNCATION_WARPERS, "mirostat")  # samplers whose support can exclude the reference token

log = logging.getLogger(__name__)


def setting_stats(
    logits: torch.Tensor, targets: torch.Tensor, setting: dict, epsilon: float, adjust=None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log loss, entropy, outside-support mask) of one sampler setting at each position.

    ``logits``: (N, V); ``targets``: (N,); ``setting``: sampler, temperature, optional param.
    ``adjust``: optional function (tempered scores) -> final scores, for the calibrated samplers.
    """
    x = upcast(logits)
    tau = float(setting["temperature"])
    scores = x
    for proc in sampling_processors(setting["sampler"], tau, setting.get("param")):
        scores = proc(targets[:, None], scores)  # the warpers ignore input_ids
    if adjust is not None:
        scores = adjust(scores)
    nll, ent = token_logloss_entropy(scores, targets)  # the distribution the sampler draws from
    outside = torch.isinf(nll)
    if setting["sampler"] in TRUNCATING and epsilon > 0:
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
    calib: dict | None = None,
    head=None,
) -> list[dict]:
    """Per pair and setting: log loss, entropy and outside-support flags at the reference tokens.

    Returns one dict per pair with arrays of shape (len(settings), n_ref): ``logloss``,
    ``tf_entropy``, ``outside``. ``calib`` / ``head``: the train_predictor outputs, needed by the
    calibrated samplers.
    """
    from entcal.calibration import Mirostat, reference_lookahead, step_bucket, tilt_logprobs

    lm_head = model.get_output_embeddings()
    device = input_device(model)
    samplers = {st["sampler"] for st in settings}
    if samplers & {"future_entropy", "one_step_lookahead", "mirostat"} and calib is None:
        raise ValueError("calibrated samplers need the model's calibration file (train_predictor output)")
    k = calib["candidates"] if calib else 0
    out = []
    for b in range(0, len(pairs), batch_size):
        batch = pairs[b : b + batch_size]
        ids, mask = pad([p + r for p, r in batch], pad_id, side="right")
        ids, mask = ids.to(device), mask.to(device)
        starts, lengths = [len(p) for p, _ in batch], [len(r) for _, r in batch]
        h_all, look_top, look_f = reference_lookahead(model, ids, mask, starts, lengths,
                                                      k if "one_step_lookahead" in samplers else 0)  # fmt: skip
        out_dev = h_all.device  # the last GPU of a model spread over several
        for i, (p, r) in enumerate(batch):
            tgt = ids[i, len(p) : len(p) + len(r)].to(out_dev)
            res = {key: np.empty((len(settings), len(r)), dtype=np.float32 if key != "outside" else bool)
                   for key in ("logloss", "tf_entropy", "outside")}  # fmt: skip
            miro = {j: Mirostat(calib["mirostat_target"], calib["mirostat_eta"])
                    for j, st in enumerate(settings) if st["sampler"] == "mirostat"}  # fmt: skip
            for start in range(0, len(r), chunk):
                sl = slice(start, start + chunk)
                h = h_all[i, sl][: len(r) - start]
                logits = lm_head(h)
                steps = np.arange(start, start + len(h))
                for j, st in enumerate(settings):
                    adjust = None
                    if st["sampler"] in ("future_entropy", "one_step_lookahead"):
                        alphas = [x["alpha"] for x in calib["alpha"][st["sampler"]]]
                        a = torch.tensor([alphas[q] for q in step_bucket(steps, calib["step_buckets"])], device=out_dev)
                        if st["sampler"] == "future_entropy":
                            def adjust(x, h=h, a=a):
                                lp = torch.log_softmax(x, -1)
                                top = lp.topk(k, -1)
                                return tilt_logprobs(lp, head(h, top.values, top.indices), top.indices, a)
                        else:
                            def adjust(x, a=a, top=look_top[i, sl][: len(h)], f=look_f[i, sl][: len(h)]):
                                return tilt_logprobs(torch.log_softmax(x, -1), f, top, a)
                    elif st["sampler"] == "mirostat":
                        def adjust(x, m=miro[j], t0=start, tgt=tgt):
                            lp = torch.log_softmax(x, -1)
                            return torch.cat([m.step(lp[q : q + 1], tgt[t0 + q - 1 : t0 + q] if t0 + q else None)
                                              for q in range(lp.shape[0])])  # fmt: skip
                    nll, ent, outside = setting_stats(logits, tgt[sl], st, epsilon, adjust)
                    res["logloss"][j, sl], res["tf_entropy"][j, sl] = nll.cpu().numpy(), ent.cpu().numpy()
                    res["outside"][j, sl] = outside.cpu().numpy()
            out.append(res)
    return out


def score_rows(chosen, scored, settings) -> list[dict]:
    """One row per pair x setting (the columns of the module docstring)."""
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
    return rows


def score_file(
    model_dir: str,
    model_name: str,
    prompts_path: str,
    out_path: str,
    *,
    settings: list[dict],
    batch_size,
    dtype: str,
    device: str,
    threads: int = 1,
    epsilon: float = 1e-3,
    calibration: str | None = None,
    head: str | None = None,
    shard_size: int = 512,
    precision: str = "exact",
    gpus: int = 0,
    gpu_memory_gb: float = 80.0,
) -> None:
    """Score one model x dataset at every sampler setting; write Parquet plus JSON sidecar.

    ``settings``: dicts with slug, sampler, temperature and (for truncation) param.
    ``calibration`` / ``head``: the train_predictor outputs, for the calibrated samplers.
    Pairs are scored in order of length (``batch_size="auto"``: sequences per pass and vocabulary
    chunk from the memory plan), ``shard_size`` at a time, each shard saved as it finishes (resumable,
    see :mod:`entcal.shards`); rows are written in example order. ``precision``: ``exact`` (weights in
    ``dtype``, bf16 on the paper grid) or ``paper`` (the authors' double-quantised NF4 model with
    ``dtype`` compute; needs bitsandbytes).
    """
    from entcal.calibration import load_calibration, load_head
    from entcal.generate import scoring_batch
    from entcal.models import load_model

    torch.set_num_threads(threads)
    model, tok = load_model(model_dir, model_name, dtype=dtype, device=device, gpus=gpus, gpu_memory_gb=gpu_memory_gb,
                            quantization="nf4" if precision == "paper" else "none")  # fmt: skip
    calib = load_calibration(calibration) if calibration else None
    head_mod = load_head(head, model)[0] if head else None
    chosen = load_prompts(prompts_path)
    chosen = [chosen[i] for i in length_order([p + r for _, p, r in chosen])]
    chunk = 256
    if batch_size == "auto":
        look = calib["candidates"] if calib and any(st["sampler"] == "one_step_lookahead" for st in settings) else 0
        batch_size, chunk = scoring_batch(model_dir, max(len(p) + len(r) for _, p, r in chosen), device=device, gpus=gpus,
                                          gpu_memory_gb=gpu_memory_gb, dtype=dtype, precision=precision, lookahead=look)  # fmt: skip
    store = ShardStore(out_path, {
        "model": model_fingerprint(model_dir), "settings": settings, "epsilon": epsilon, "dtype": dtype,
        "precision": precision, "calibration": Path(calibration).read_text() if calibration else None,
        "pairs": [(p, r) for _, p, r in chosen], "batch_size": batch_size,
    })  # fmt: skip
    t0, frames = time.time(), []
    for sl, _ in group_shards(fixed_batches(len(chosen), batch_size), shard_size):
        part = chosen[sl]
        ids = [e for e, _, _ in part]
        df = store.load(len(frames), ids)
        if df is None:
            scored = score_settings(model, [(p, r) for _, p, r in part], settings, batch_size, tok.pad_token_id,
                                    epsilon, chunk=chunk, calib=calib, head=head_mod)  # fmt: skip
            df = pd.DataFrame(score_rows(part, scored, settings))
            store.save(len(frames), df, ids)
        frames.append(df)
    seconds = time.time() - t0
    store.merge(frames, sort_by="example_id")
    n_tok = sum(len(p) + len(r) for _, p, r in chosen)
    sidecar = {
        "model": model_name,
        "settings": [st["slug"] for st in settings],
        "truncation_epsilon": epsilon,
        "n_prompts": len(chosen),
        "forward_tokens": n_tok,
        "batch_size": batch_size,
        "vocab_chunk": chunk,
        "shards": len(frames),
        "shards_resumed": store.resumed,
        "shards_redone": store.redone,
        "precision": precision,
        "seconds": round(seconds, 2),
        "tokens_per_second": round(n_tok / max(seconds, 1e-9), 1),
        "dtype": dtype,
    }
    log.info("scoring: %s", write_sidecar(out_path, sidecar))
