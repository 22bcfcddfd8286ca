"""Scoring the human reference after each prompt: per-token log loss and teacher-forced entropy.

One forward pass per batch serves every sampler setting of the model's grid: temperature and
truncation only transform the logits, so each setting's log loss and entropy come from the same
hidden states. The vocabulary projection is chunked (``chunk`` positions at a time).

Calibrated samplers (:mod:`entcal.sampling`) are scored from the same pass: ``future_entropy`` tilts
the logits with the trained head's prediction on the same hidden state; ``one_step_lookahead`` adds
one batched forward of the top candidates over the pass's KV cache; ``mirostat`` runs its
controller teacher-forced along the reference (its surprise driven by the human tokens).

For a truncation sampler (top_p, top_k, min_p, typical, eta, and mirostat) the log loss
of a reference token outside the kept support is infinite. We record which tokens fall outside and
report the log loss of the stated smoothing p_eps = (1 - eps) p_trunc + eps p_tau (eps =
``scoring.truncation_epsilon``), p_tau being the untruncated distribution at the same temperature.
Plain (ancestral) settings are scored exactly, without smoothing.

Rows of :func:`score_rows` (written by :func:`entcal.score_jobs.score_file` to ``scores/{dataset}/{model}.parquet``),
one per prompt x sampler setting:

- example_id (int), setting (str: slug such as ``ancestral-t0.8`` or ``top_p0.9-t1``), sampler (str),
  sampler_param (float, NaN for ancestral), temperature (float), prompt_len (int), n_tokens (int);
- token_ids (list[int]): the reference tokens;
- logloss (list[float32]): -log p(y_t | prompt, y_<t) under the setting's distribution (smoothed for
  truncation), nats;
- tf_entropy (list[float32]): entropy of the setting's distribution at each reference position;
- n_outside (int): reference tokens outside a truncation's support (0 for ancestral).
"""

from __future__ import annotations

import numpy as np
import torch

from entcal.lookahead import teacher_forced
from entcal.metrics import token_logloss_entropy, upcast
from entcal.samplers import sampler as registry_entry
from entcal.sampling import reference_adjuster, sampling_processors


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
    if registry_entry(setting["sampler"]).truncates and epsilon > 0:
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
    lm_head = model.get_output_embeddings()
    k = calib["candidates"] if calib and any(st["sampler"] == "one_step_lookahead" for st in settings) else 0
    out = []
    for b, ids, h_all, look_top, look_f in teacher_forced(model, pairs, batch_size, pad_id, k):
        out_dev = h_all.device  # the last GPU of a model spread over several
        for i, (p, r) in enumerate(pairs[b : b + batch_size]):
            tgt = ids[i, len(p) : len(p) + len(r)].to(out_dev)
            res = {
                key: np.empty((len(settings), len(r)), dtype=np.float32 if key != "outside" else bool)
                for key in ("logloss", "tf_entropy", "outside")
            }
            adjusters = [reference_adjuster(st["sampler"], calib, head, tgt, st.get("param")) for st in settings]
            for start in range(0, len(r), chunk):
                sl = slice(start, start + chunk)
                h = h_all[i, sl][: len(r) - start]
                logits = lm_head(h)
                extra = {
                    "h": h,
                    "start": start,
                    "top": look_top[i, sl][: len(h)] if k else None,
                    "f": look_f[i, sl][: len(h)] if k else None,
                }
                for j, st in enumerate(settings):
                    adjust = (lambda x, a=adjusters[j]: a(x, **extra)) if adjusters[j] else None
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
