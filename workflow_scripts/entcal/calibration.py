"""Calibrated sampling for real language models: a learned predictor of future entropy (Section 5).

The adjusted next-token distribution is the paper's tilt

    p_ent(y | x) ∝ p̂(y | x)^(1 + a) · exp(-a · f(x, y)),

where f(x, y) predicts the entropy of what the model would generate after choosing y. With f = 0
the tilt is temperature 1 / (1 + a); a = 0 gives back p̂. Here f is the k-step truncated future
entropy of the *base* model, E[sum_{u=1..k} H(p̂(. | x, y, Y_<u))] with Y sampled from p̂ (the
practical form of Algorithm 1: one predictor for all steps, labels from the unadjusted model, as the
paper's Section 5 suggests), and ``a`` is one number per bucket of generation steps.

Pieces (each tested on its own):

- :func:`tilt_logprobs`: the tilt. f is applied to the top-K candidates of p̂; every other token
  gets the p̂-weighted mean of the candidates' f (the head is trained on candidates only, so its
  values on tokens the model would not pick are not trusted).
- Labels (:func:`make_prefixes`, :func:`label_prefixes`): prefixes cut from calibration-split human
  text at the same positions the evaluation generates at (prompt_tokens + step); for each, the
  top-K candidates and ``rollouts`` continuations of k tokens each, sampled with the main
  experiment's own generation code; the label is the mean of the summed per-step entropies along
  the continuations (the lower-variance unbiased estimator of ``entcal.exact``).
- :class:`FutureEntropyHead`: on the frozen model's last hidden state h, one forward gives f for the
  whole vocabulary: f(h, y) = mu + sigma (u(h) · P e_y + b_y), with e_y the model's frozen output
  embedding, u a small MLP, P a learned projection to the same rank. Trained with MSE.
- :func:`candidate_entropies`: the exact one-step lookahead (Braverman et al. 2020): the entropy of
  the next distribution after each candidate, all candidates in one batched forward over the KV
  cache with a 4-D attention mask (each candidate sees its prefix and itself).
- :func:`fit_alpha`: a per step bucket, minimising log loss on calibration-split human text
  (scipy bounded 1-D minimisation).
- Logits processors for ``model.generate``: :class:`FutureEntropyTilt` with a head
  (:class:`HeadPredictor`) or the lookahead (:class:`LookaheadPredictor`), and :class:`Mirostat`.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.optimize import minimize_scalar
from torch import nn
from transformers import LogitsProcessor

from entcal.files import read_parquet, write_parquet
from entcal.metrics import upcast

log = logging.getLogger(__name__)

TILT_SAMPLERS = ("future_entropy", "one_step_lookahead")


# --------------------------------------------------------------------------------------------------
# The tilt and its alpha


def tilt_logprobs(logp: torch.Tensor, f_top: torch.Tensor, top_idx: torch.Tensor, alpha) -> torch.Tensor:
    """log p_ent, normalised: (1 + a) log p̂ - a f over the vocabulary.

    ``logp``: (N, V) log-probabilities of p̂; ``f_top``: (N, K) future entropy of the candidates
    ``top_idx`` (N, K); tokens outside the candidates get the p̂-weighted mean of ``f_top``.
    ``alpha``: a float or an (N,) tensor; it must be > -1.
    """
    f_top = f_top.to(logp.dtype)
    w = torch.softmax(logp.gather(-1, top_idx), -1)
    f_rest = (w * f_top).sum(-1, keepdim=True)
    f = f_rest.expand_as(logp).scatter(-1, top_idx, f_top)
    a = alpha[:, None].to(logp.dtype) if torch.is_tensor(alpha) else float(alpha)
    z = (1 + a) * logp - a * f
    z = torch.where(torch.isneginf(logp), logp, z)  # tokens a truncation removed stay removed
    return torch.log_softmax(z, -1)


def step_bucket(steps, edges: list[int]) -> np.ndarray:
    """Index of the bucket of each generation step (0-based), buckets starting at ``edges``."""
    return np.searchsorted(np.asarray(edges), np.asarray(steps), side="right") - 1


def tilt_nll(logp, f_top, top_idx, targets, alpha) -> torch.Tensor:
    """Per-position log loss of the targets under the tilted distribution."""
    return -tilt_logprobs(logp, f_top, top_idx, alpha).gather(-1, targets[:, None])[:, 0]


def fit_alpha(logp, f_top, top_idx, targets, bounds=(-0.5, 4.0), xatol: float = 1e-4) -> dict:
    """The a minimising the mean log loss of ``targets`` under the tilt (scipy, bounded Brent).

    Returns alpha, logloss at alpha, logloss at 0 (the base model), and n (positions).
    """

    def obj(a):
        return float(tilt_nll(logp, f_top, top_idx, targets, a).double().mean())

    res = minimize_scalar(obj, bounds=bounds, method="bounded", options={"xatol": xatol})
    return {"alpha": float(res.x), "logloss": float(res.fun), "logloss_base": obj(0.0), "n": int(len(targets))}


# --------------------------------------------------------------------------------------------------
# Exact one-step lookahead over a KV cache


@torch.inference_mode()
def candidate_entropies(model, past, key_mask: torch.Tensor, ends: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
    """Entropy of p̂(. | prefix, c) for each query (prefix, candidate c), one batched forward.

    ``past``: the model's cache over S keys for B rows, ``key_mask`` (B, S) bool: keys that are real
    tokens (not padding); ``ends`` (B, Q): query q of row b sees keys [0, ends) of row b;
    ``cands`` (B, Q) candidate tokens. The candidate's position id is the number of real tokens it
    follows. The cache is cropped back to S keys afterwards.
    """
    B, S = key_mask.shape
    Q = cands.shape[1]
    dev = cands.device
    idx = torch.arange(S, device=dev)
    see = (idx[None, None, :] < ends[:, :, None]) & key_mask[:, None, :]  # (B, Q, S)
    self_ = torch.eye(Q, dtype=torch.bool, device=dev).expand(B, Q, Q)
    allowed = torch.cat([see, self_], -1)[:, None]  # (B, 1, Q, S + Q)
    dtype = model.dtype
    mask = torch.zeros(allowed.shape, dtype=dtype, device=dev).masked_fill(~allowed, torch.finfo(dtype).min)
    csum = torch.cat([torch.zeros(B, 1, dtype=torch.long, device=dev), key_mask.long().cumsum(-1)], -1)
    pos = csum.gather(1, ends)
    logits = model(input_ids=cands, attention_mask=mask, position_ids=pos, past_key_values=past, use_cache=True).logits
    past.crop(-Q)  # drop the candidates again (negative: number of tokens to remove)
    logp = torch.log_softmax(upcast(logits), -1)
    return -(logp.exp() * logp.nan_to_num(neginf=0.0)).sum(-1)


@torch.inference_mode()
def reference_lookahead(model, ids: torch.Tensor, mask: torch.Tensor, starts: list[int], lengths: list[int], k: int,
                        query_chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """Teacher-forced pass over right-padded sequences, with the one-step lookahead at each scored
    position when ``k`` > 0.

    Row b scores positions ``starts[b] .. starts[b] + lengths[b] - 1`` (the prediction of token
    ``starts[b] + j`` from the tokens before it). Returns, per row and scored position j (padded
    to max length): the hidden state (B, L, d) and, for ``k`` > 0, the top-k candidate ids
    (B, L, k) of p̂ and their lookahead entropies (B, L, k) (else None, None).
    """
    base = getattr(model, model.base_model_prefix)
    head = model.get_output_embeddings()
    out = base(input_ids=ids, attention_mask=mask, use_cache=k > 0)
    hid, past = out.last_hidden_state, out.past_key_values
    B, L = ids.shape[0], max(lengths)
    # hidden state predicting token starts[b] + j sits at position starts[b] + j - 1
    gather = torch.tensor([[min(s - 1 + j, ids.shape[1] - 1) for j in range(L)] for s in starts], device=hid.device)
    h = hid.gather(1, gather[:, :, None].expand(-1, -1, hid.shape[-1]))
    if k == 0:
        return h, None, None
    top = torch.zeros(B, L, k, dtype=torch.long, device=h.device)
    f = torch.zeros(B, L, k, device=h.device)
    per = max(1, query_chunk // k)
    for j0 in range(0, L, per):
        j1 = min(L, j0 + per)
        top[:, j0:j1] = head(h[:, j0:j1]).float().topk(k, -1).indices  # logits order = log-prob order
        ends = (gather[:, j0:j1] + 1)[:, :, None].expand(-1, -1, k).reshape(B, -1).to(ids.device)
        cands = top[:, j0:j1].reshape(B, -1).to(ids.device)
        f[:, j0:j1] = candidate_entropies(model, past, mask.bool(), ends, cands).view(B, j1 - j0, k).to(h.device)
    return h, top, f


# --------------------------------------------------------------------------------------------------
# Labels


def make_prefixes(tok, windows: pd.DataFrame, prompt_tokens: int, max_len: int, per_window: int, n_windows: int,
                  heldout_fraction: float, seed: int, chat: bool = False) -> list[dict]:  # fmt: skip
    """Prefixes of calibration-split windows: the tokenizer's specials + the window's first
    ``prompt_tokens + step`` tokens, ``step`` uniform in [0, max_len) (the evaluation's generation
    steps). A ``heldout_fraction`` of the windows (not of the prefixes) is kept for testing."""
    from entcal.prompts import prefix_ids

    rng = random.Random(seed)
    rows, used = [], 0
    for r in windows.itertuples():
        body = tok(r.text, add_special_tokens=False)["input_ids"]
        if len(body) < prompt_tokens + 1:
            continue
        pre = prefix_ids(tok, r.prefix, getattr(r, "instruction", ""), chat)
        top_step = min(max_len, len(body) - prompt_tokens)
        split = "test" if used < round(heldout_fraction * n_windows) else "train"
        for step in sorted(rng.sample(range(top_step), min(per_window, top_step))):
            rows.append({"window_id": int(r.example_id), "split": split, "step": step,
                         "prefix_ids": pre + body[: prompt_tokens + step]})  # fmt: skip
        used += 1
        if used == n_windows:
            break
    if used < n_windows:
        log.warning("only %d of %d calibration windows hold %d tokens", used, n_windows, prompt_tokens + 1)
    for i, r in enumerate(rows):
        r["prefix_id"] = i
    return rows


@torch.inference_mode()
def last_hidden(model, seqs: list[list[int]], pad_id: int, batch_size: int) -> torch.Tensor:
    """The last hidden state at the end of each sequence, (N, d), float32."""
    from entcal.models import input_device
    from entcal.prompts import pad

    base = getattr(model, model.base_model_prefix)
    device = input_device(model)
    out = []
    for b in range(0, len(seqs), batch_size):
        batch = seqs[b : b + batch_size]
        ids, mask = pad(batch, pad_id, side="right")
        h = base(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
        last = torch.tensor([len(s) - 1 for s in batch], device=h.device)
        out.append(h[torch.arange(len(batch), device=h.device), last].float())
    return torch.cat(out)


@torch.inference_mode()
def label_prefixes(model, tok, prefixes: list[dict], *, candidates: int, rollouts: int, horizon: int,
                   batch_size: int, seed: int, stop_at_eos: bool = True,
                   end_ids: list[int] | None = None) -> tuple[pd.DataFrame, int]:  # fmt: skip
    """Monte Carlo labels of the k-step future entropy after each top candidate of each prefix.

    Returns (one row per prefix x candidate, forward tokens spent). The rollouts are sampled by
    :func:`entcal.generate.sample_with_entropy` (the main experiment's generation code) at
    temperature 1; the label is the mean over rollouts of the summed per-step entropies of the
    ``horizon`` steps after the candidate (a rollout that ends at eos contributes its entropies up to
    the eos). The first of those entropies is the exact one-step lookahead (``onestep_entropy``).
    """
    from entcal.generate import sample_with_entropy

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
    res = sample_with_entropy(model, tok, [prompts[j] for j in order], temperature=1.0, max_new_tokens=horizon,
                              batch_size=batch_size, seed=seed, stop_at_eos=stop_at_eos, end_ids=sorted(ends))  # fmt: skip
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
            rows.append({
                "prefix_id": p["prefix_id"], "window_id": p["window_id"], "split": p["split"], "step": p["step"],
                "prefix_len": len(p["prefix_ids"]), "rank": r, "candidate": int(top.indices[i, r]),
                "logprob": float(top.values[i, r]),
                "onestep_entropy": float(first[n, 0]) if n is not None else 0.0,
                "label": float(sums[n].mean()) if n is not None else 0.0,
                "label_rollouts": sums[n].astype(np.float32) if n is not None else np.zeros(rollouts, np.float32),
            })  # fmt: skip
    spent = sum(len(p["prefix_ids"]) for p in prefixes) + sum(len(q) + horizon for q in prompts)
    return pd.DataFrame(rows), int(spent)


# --------------------------------------------------------------------------------------------------
# The predictor head


class FutureEntropyHead(nn.Module):
    """f(h, y) = mu + sigma * (u(h) · P e_y + s(h) + g(h) · log p̂(y | h)) for every token y in one matmul.

    ``h``: the frozen model's last hidden state; ``e_y``: its frozen output embedding (not saved with
    the head); log p̂(y | h) is the model's own log-probability of the candidate (clipped at -30), which
    the model computes anyway. No per-token free parameters: a token seen in few labels cannot be
    memorised.
    """

    def __init__(self, emb: torch.Tensor, rank: int = 32, hidden: int = 128, mu: float = 0.0, sigma: float = 1.0):
        super().__init__()
        d = emb.shape[1]
        self.register_buffer("emb", emb.detach().float(), persistent=False)
        self.norm = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, rank + 2))
        self.proj = nn.Linear(d, rank, bias=False)
        self.register_buffer("mu", torch.tensor(float(mu)))
        self.register_buffer("sigma", torch.tensor(float(sigma)))

    def forward(self, h: torch.Tensor, logp: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:
        """(N, V) predictions from ``logp`` (N, V), or (N, K) at ``tokens`` (N, K) with ``logp`` (N, K)
        the log-probabilities of those tokens."""
        dtype = self.proj.weight.dtype
        z = self.norm(h.to(dtype))
        out = self.mlp(z)  # (N, r + 2)
        u, s, g = out[:, :-2], out[:, -2:-1], out[:, -1:]
        lp = logp.to(dtype).clamp(min=-30.0)
        e = self.proj(self.emb.to(dtype)) if tokens is None else self.proj(self.emb.to(dtype)[tokens])
        inter = u @ e.T if tokens is None else (e * u[:, None, :]).sum(-1)
        return self.mu + self.sigma * (inter + s + g * lp)


def r2(y: np.ndarray, pred: np.ndarray) -> float:
    y, pred = np.asarray(y, np.float64), np.asarray(pred, np.float64)
    return float(1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2))


def _predict(head: FutureEntropyHead, h: torch.Tensor, df: pd.DataFrame) -> torch.Tensor:
    pid = torch.tensor(df["prefix_id"].to_numpy())
    cand = torch.tensor(df["candidate"].to_numpy())[:, None]
    lp = torch.tensor(df["logprob"].to_numpy(), dtype=torch.float32)[:, None]
    return head(h[pid], lp, cand)[:, 0]


def train_head(head: FutureEntropyHead, h: torch.Tensor, labels: pd.DataFrame, *, steps: int, lr: float,
               batch_size: int, seed: int, weight_decay: float = 0.05, val: pd.DataFrame | None = None,
               eval_every: int = 25, patience: int = 8) -> dict:  # fmt: skip
    """MSE on the observed (prefix, candidate) labels only; ``h`` (n_prefixes, d) indexed by prefix_id.

    With ``val`` (labels of other windows), early stopping: the validation MSE is measured every
    ``eval_every`` steps, training stops after ``patience`` evaluations without improvement and the
    best weights are kept. Returns {"loss": per-step training loss (standardised units),
    "val_loss": [(step, loss)], "best_step": step}.
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    y = torch.tensor(labels["label"].to_numpy(), dtype=torch.float32)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    hist, val_hist, best, best_step, best_state, bad = [], [], float("inf"), 0, None, 0
    y_val = torch.tensor(val["label"].to_numpy(), dtype=torch.float32) if val is not None and len(val) else None
    for step in range(1, steps + 1):
        b = torch.randint(len(y), (min(batch_size, len(y)),), generator=g).numpy()
        pred = _predict(head, h, labels.iloc[b])
        loss = torch.mean(((pred - y[b]) / head.sigma) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        hist.append(float(loss.detach()))
        if y_val is not None and (step % eval_every == 0 or step == steps):
            with torch.no_grad():
                v = float(torch.mean(((_predict(head, h, val) - y_val) / head.sigma) ** 2))
            val_hist.append((step, v))
            if v < best:
                best, best_step, bad = v, step, 0
                best_state = {k: t.detach().clone() for k, t in head.state_dict().items()}
            else:
                bad += 1
                if bad >= patience:
                    break
    if best_state is not None:
        head.load_state_dict(best_state)
    return {"loss": hist, "val_loss": val_hist, "best_step": best_step or len(hist)}


@torch.no_grad()
def evaluate_head(head: FutureEntropyHead, h: torch.Tensor, train: pd.DataFrame, test: pd.DataFrame) -> dict:
    """Held-out error of the head on fresh Monte Carlo labels, against a constant and a one-step baseline.

    ``noise_ceiling_r2``: the R^2 a perfect predictor could reach, given the labels' own Monte Carlo
    variance (estimated from the spread of the rollouts).
    """
    y_tr, y_te = train["label"].to_numpy(), test["label"].to_numpy()
    p_te = _predict(head, h, test).numpy()
    const = np.full_like(y_te, y_tr.mean())
    b, a = np.polyfit(train["onestep_entropy"], y_tr, 1)
    one = a + b * test["onestep_entropy"].to_numpy()
    rolls = np.stack(test["label_rollouts"].to_numpy())
    noise = float(np.mean(rolls.var(axis=1, ddof=1) / rolls.shape[1])) if rolls.shape[1] > 1 else float("nan")
    return {
        "n_train": int(len(train)),
        "n_test": int(len(test)),
        "r2_train": r2(y_tr, _predict(head, h, train).numpy()),
        "r2_test": r2(y_te, p_te),
        "rmse_test": float(np.sqrt(np.mean((y_te - p_te) ** 2))),
        "rmse_constant": float(np.sqrt(np.mean((y_te - const) ** 2))),
        "r2_onestep_linear": r2(y_te, one),
        "rmse_onestep_linear": float(np.sqrt(np.mean((y_te - one) ** 2))),
        "label_noise_var": noise,
        "noise_ceiling_r2": float(1 - noise / np.var(y_te)) if np.isfinite(noise) else float("nan"),
    }


def save_head(head: FutureEntropyHead, path: str | Path, settings: dict) -> None:
    """``path`` (.safetensors) holds the head's own tensors; the JSON beside it its settings."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in head.state_dict().items()}
    save_file(state, str(path))
    Path(path).with_suffix(".json").write_text(json.dumps(settings, indent=2))


def load_head(path: str | Path, model) -> tuple[FutureEntropyHead, dict]:
    from safetensors.torch import load_file

    settings = json.loads(Path(path).with_suffix(".json").read_text())
    emb = model.get_output_embeddings().weight
    head = FutureEntropyHead(emb, rank=settings["head"]["rank"], hidden=settings["head"]["hidden"])
    head.load_state_dict(load_file(str(path)))
    return head.to(emb.device).eval(), settings


# --------------------------------------------------------------------------------------------------
# Logits processors for model.generate


class HiddenTap:
    """Keeps the base model's last hidden state at the newest position of every forward."""

    def __init__(self, model):
        self.last: torch.Tensor | None = None
        base = getattr(model, model.base_model_prefix)
        self.handle = base.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        self.last = output.last_hidden_state[:, -1]

    def remove(self):
        self.handle.remove()


class HeadPredictor:
    """f for the candidates from the trained head on the tapped hidden state."""

    def __init__(self, head: FutureEntropyHead, tap: HiddenTap):
        self.head, self.tap = head, tap

    def __call__(self, input_ids: torch.Tensor, top_idx: torch.Tensor, top_logp: torch.Tensor) -> torch.Tensor:
        return self.head(self.tap.last, top_logp, top_idx)


class LookaheadPredictor:
    """f for the candidates = exact entropy of the next distribution after each (one-step lookahead).

    Keeps its own KV cache of the sequences (the prompt's attention mask given, generated tokens
    all real), so each step costs one token to extend the cache plus one per candidate.
    """

    def __init__(self, model, prompt_mask: torch.Tensor):
        self.model, self.key_mask, self.past = model, prompt_mask.bool(), None
        self.forward_tokens = 0

    @torch.inference_mode()
    def __call__(self, input_ids: torch.Tensor, top_idx: torch.Tensor, top_logp: torch.Tensor | None = None) -> torch.Tensor:
        B, n = input_ids.shape
        if self.key_mask.shape[1] < n:
            self.key_mask = torch.cat([self.key_mask, self.key_mask.new_ones(B, n - self.key_mask.shape[1])], 1)
        have = 0 if self.past is None else self.past.get_seq_length()
        new = input_ids[:, have:]
        pos = (self.key_mask.long().cumsum(-1) - 1).clamp(min=0)[:, have:]
        out = self.model(input_ids=new, attention_mask=self.key_mask.long(), position_ids=pos, past_key_values=self.past,
                         use_cache=True, logits_to_keep=1)  # fmt: skip
        self.past = out.past_key_values
        k = top_idx.shape[1]
        ends = torch.full((B, k), n, device=input_ids.device)
        self.forward_tokens += new.numel() + top_idx.numel()
        f = candidate_entropies(self.model, self.past, self.key_mask, ends, top_idx.to(self.key_mask.device))
        return f.to(top_idx.device)


class FutureEntropyTilt(LogitsProcessor):
    """p_ent ∝ p^(1 + a_t) exp(-a_t f) on the top-K candidates (see :func:`tilt_logprobs`);
    ``a_t`` from the step bucket of the generation step t (0 = first generated token)."""

    def __init__(self, predictor, alphas: list[float], edges: list[int], candidates: int, prompt_width: int):
        self.predictor, self.alphas, self.edges = predictor, np.asarray(alphas, float), edges
        self.k, self.prompt_width = candidates, prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.prompt_width
        a = float(self.alphas[step_bucket([step], self.edges)[0]])
        logp = torch.log_softmax(scores.float(), -1)
        top = logp.topk(self.k, -1)
        f = self.predictor(input_ids, top.indices, top.values)
        return tilt_logprobs(logp, f, top.indices, a)


class Mirostat(LogitsProcessor):
    """Mirostat (v2 form, Basu et al. 2021): keep the tokens whose surprise -log p is at most mu,
    then move mu by eta * (target - surprise of the token just drawn), so per-step surprise is held
    near ``target`` (nats). The surprise that drives mu is measured under the untruncated
    distribution, which is also defined on human text (where the next token may lie outside the
    kept set). mu starts at 2 * target, as in the paper."""

    def __init__(self, target: float, eta: float = 0.1):
        self.target, self.eta = float(target), float(eta)
        self.mu: torch.Tensor | None = None
        self._last_logp: torch.Tensor | None = None

    def step(self, logp: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
        """Update mu with the previous token (B,) (None at the first step); return masked logp."""
        if self.mu is None:
            self.mu = torch.full(logp.shape[:1], 2 * self.target, dtype=torch.float64, device=logp.device)
        if previous is not None and self._last_logp is not None:
            s = -self._last_logp.gather(-1, previous[:, None])[:, 0].double()
            self.mu = self.mu - self.eta * (s - self.target)
        self._last_logp = logp
        keep = (-logp <= self.mu[:, None].to(logp.dtype)) | (logp == logp.max(-1, keepdim=True).values)
        return logp.masked_fill(~keep, float("-inf"))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        logp = torch.log_softmax(scores.float(), -1)
        return self.step(logp, input_ids[:, -1] if self._last_logp is not None else None)


def mirostat_reference(logp: torch.Tensor, targets: torch.Tensor, target: float, eta: float) -> torch.Tensor:
    """Mirostat run teacher-forced along a human sequence: the truncated log-probs at each position
    (L, V), mu driven by the human tokens' surprise."""
    m = Mirostat(target, eta)
    out = []
    for j in range(logp.shape[0]):
        out.append(m.step(logp[j : j + 1], targets[j - 1 : j] if j else None))
    return torch.cat(out)


# --------------------------------------------------------------------------------------------------
# Building the per-setting machinery for generation and scoring


def load_calibration(path: str | Path) -> dict:
    """The predictor JSON written by the train_predictor rule (alphas, buckets, mirostat target...)."""
    return json.loads(Path(path).read_text())


def processor_factory(sampler: str, model, calib: dict, head_path: str | Path | None):
    """A function (prompt input_ids, attention_mask) -> list of logits processors for one batch,
    for the samplers that need the model or the predictor; None for the others."""
    if sampler == "mirostat":
        return lambda ids, mask: [Mirostat(calib["mirostat_target"], calib["mirostat_eta"])]
    if sampler not in TILT_SAMPLERS:
        return None
    fit = calib["alpha"][sampler]
    k, edges = calib["candidates"], calib["step_buckets"]
    alphas = [b["alpha"] for b in fit]
    if sampler == "future_entropy":
        head, _ = load_head(head_path, model)
        tap = HiddenTap(model)
        return lambda ids, mask: [FutureEntropyTilt(HeadPredictor(head, tap), alphas, edges, k, ids.shape[1])]
    return lambda ids, mask: [FutureEntropyTilt(LookaheadPredictor(model, mask), alphas, edges, k, ids.shape[1])]


def forward_tokens_per_step(sampler: str, candidates: int) -> int:
    """Model forward tokens per generated token (the head itself costs one rank-r vocabulary matmul)."""
    return 2 + candidates if sampler == "one_step_lookahead" else 1


# --------------------------------------------------------------------------------------------------
# Pipeline steps (one model x dataset each)


def job_batch(batch_size, model_dir: str, seq_len: int, *, device: str, gpus: int, gpu_memory_gb: float, dtype: str,
              new_tokens: int = 0, lookahead: int = 0) -> int:  # fmt: skip
    """``batch_size``, or with ``"auto"`` the memory plan's: sequences of ``seq_len`` tokens that fit
    one teacher-forced pass (with the lookahead's cache) and, with ``new_tokens``, a generation."""
    if batch_size != "auto":
        return int(batch_size)
    from entcal.generate import job_budget, scoring_batch
    from entcal.plan import ModelShape, plan_generation

    b = scoring_batch(model_dir, seq_len, device=device, gpus=gpus, gpu_memory_gb=gpu_memory_gb, dtype=dtype,
                      lookahead=lookahead)[0]  # fmt: skip
    if new_tokens:
        g = plan_generation(ModelShape.from_dir(model_dir), job_budget(device, gpus, gpu_memory_gb), seq_len + new_tokens,
                            prompt_len=seq_len, dtype=dtype)  # fmt: skip
        b = min(b, max(1, g["batch"]))
    return b


def labels_file(model_dir: str, model_name: str, windows_path: str, out_path: str, *, prompt_tokens: int, max_len: int,
                cal: dict, seed: int, dtype: str, device: str, threads: int = 1, stop_at_eos: bool = True,
                chat: bool = False, gpus: int = 0, gpu_memory_gb: float = 80.0) -> None:  # fmt: skip
    """Monte Carlo labels for one model x dataset: ``labels.parquet`` plus a JSON sidecar.

    Columns: prefix_id, window_id, split (train | test), step (0-based generation step the prefix
    ends at), prefix_len, rank, candidate (token id), logprob (log p̂ of the candidate),
    onestep_entropy (entropy of the next distribution after the candidate, exact), label (mean over
    rollouts of the summed entropies of the next ``horizon`` steps, nats), label_rollouts (list),
    prefix_ids (list[int]).
    """
    import time

    from entcal.models import load_model
    from entcal.prompts import end_token_ids

    torch.set_num_threads(threads)
    model, tok = load_model(model_dir, model_name, dtype=dtype, device=device, gpus=gpus, gpu_memory_gb=gpu_memory_gb)
    windows = read_parquet(windows_path)
    prefixes = make_prefixes(tok, windows, prompt_tokens, max_len, cal["prefixes_per_window"], cal["n_windows"],
                             cal["test_fraction"], seed, chat)  # fmt: skip
    if not prefixes:
        raise ValueError(f"{windows_path}: no calibration window holds {prompt_tokens + 1} tokens")
    batch = job_batch(cal["batch_size"], model_dir, max(len(p["prefix_ids"]) for p in prefixes) + 1, device=device,
                      gpus=gpus, gpu_memory_gb=gpu_memory_gb, dtype=dtype, new_tokens=cal["horizon"])  # fmt: skip
    t0 = time.time()
    df, spent = label_prefixes(model, tok, prefixes, candidates=cal["candidates"], rollouts=cal["rollouts"],
                               horizon=cal["horizon"], batch_size=batch, seed=seed, stop_at_eos=stop_at_eos,
                               end_ids=end_token_ids(tok, model_dir))  # fmt: skip
    seconds = time.time() - t0
    df["prefix_ids"] = df["prefix_id"].map({p["prefix_id"]: p["prefix_ids"] for p in prefixes})
    side = {
        "model": model_name, "horizon": cal["horizon"], "candidates": cal["candidates"], "rollouts": cal["rollouts"],
        "n_prefixes": len(prefixes), "n_labels": len(df), "n_windows": int(df["window_id"].nunique()),
        "label_mean": float(df["label"].mean()), "label_sd": float(df["label"].std()),
        "forward_tokens": spent, "seconds": round(seconds, 2),
    }  # fmt: skip
    log.info("labels: %s", write_parquet(df, out_path, side))


@torch.inference_mode()
def fit_data(model, pairs: list[tuple[list[int], list[int]]], k: int, head: FutureEntropyHead, lookahead: bool,
             batch_size: int, pad_id: int) -> dict[str, torch.Tensor]:  # fmt: skip
    """Every scored position of the pairs: log p̂ (N, V), top-k candidates (N, k), the head's and
    (optionally) the lookahead's f on them (N, k), the human token (N,) and the step (N,), on the CPU."""
    from entcal.models import input_device
    from entcal.prompts import pad

    lm_head = model.get_output_embeddings()
    device = input_device(model)
    acc: dict[str, list] = {k_: [] for k_ in ("logp", "top", "f_head", "f_look", "target", "step")}
    for b in range(0, len(pairs), batch_size):
        batch = pairs[b : b + batch_size]
        ids, mask = pad([p + r for p, r in batch], pad_id, side="right")
        ids, mask = ids.to(device), mask.to(device)
        starts, lengths = [len(p) for p, _ in batch], [len(r) for _, r in batch]
        h, top, f = reference_lookahead(model, ids, mask, starts, lengths, k if lookahead else 0)
        for i, (s, n) in enumerate(zip(starts, lengths)):
            lp = torch.log_softmax(lm_head(h[i, :n]).float(), -1)
            t = lp.topk(k, -1).indices if not lookahead else top[i, :n]
            acc["logp"].append(lp.cpu())
            acc["top"].append(t.cpu())
            acc["f_head"].append(head(h[i, :n], lp.gather(-1, t), t).cpu())
            if lookahead:
                acc["f_look"].append(f[i, :n].cpu())
            acc["target"].append(ids[i, s : s + n].cpu())
            acc["step"].append(torch.arange(n))
    return {k_: torch.cat(v) for k_, v in acc.items() if v}


def mean_stats(scores: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
    """(mean entropy, mean log loss) over positions of the distributions ``scores`` (log-probs or logits)."""
    from entcal.metrics import token_logloss_entropy

    nll, ent = token_logloss_entropy(scores, targets)
    return float(ent.double().mean()), float(nll.double().mean())


def temperature_at_entropy(logp: torch.Tensor, targets: torch.Tensor, entropy: float, lo: float = 0.05, hi: float = 5.0):
    """The global temperature whose mean entropy over the positions equals ``entropy`` (Brent), and
    its mean log loss: plain temperature at exactly equal (teacher-forced) entropy."""
    from scipy.optimize import brentq

    def gap(tau):
        return mean_stats(logp / tau, targets)[0] - entropy

    if gap(lo) > 0 or gap(hi) < 0:
        return float("nan"), float("nan")
    tau = brentq(gap, lo, hi, xtol=1e-6)
    return float(tau), mean_stats(logp / tau, targets)[1]


def equal_entropy_comparison(data: dict, fits: dict, edges: list[int]) -> dict:
    """For each tilt at its fitted alphas: its mean entropy and log loss on the fit windows (human
    text, teacher-forced), and those of the global temperature with exactly the same mean entropy.
    ``delta_logloss`` < 0: the tilt has lower log loss than temperature at equal entropy."""
    bucket = step_bucket(data["step"].numpy(), edges)
    out = {}
    for s, buckets in fits.items():
        f = data["f_head"] if s == "future_entropy" else data["f_look"]
        a = torch.tensor([buckets[q]["alpha"] for q in bucket], dtype=data["logp"].dtype)
        ent, ll = mean_stats(tilt_logprobs(data["logp"], f, data["top"], a), data["target"])
        tau, ll_t = temperature_at_entropy(data["logp"], data["target"], ent)
        base_ent, base_ll = mean_stats(data["logp"], data["target"])
        out[s] = {"entropy": ent, "logloss": ll, "base_entropy": base_ent, "base_logloss": base_ll,
                  "temperature": tau, "temperature_logloss": ll_t, "delta_logloss": ll - ll_t}  # fmt: skip
    return out


def tradeoff_rows(data: dict, alphas: list[float]) -> list[dict]:
    """Teacher-forced trade-off on human text: mean log loss and entropy of temperature 1/(1+a) and of
    each tilt at fixed a."""
    from entcal.metrics import token_logloss_entropy

    rows = []
    for a in alphas:
        methods = {"temperature": (1 + a) * data["logp"]}
        methods["future_entropy"] = tilt_logprobs(data["logp"], data["f_head"], data["top"], a)
        if "f_look" in data:
            methods["one_step_lookahead"] = tilt_logprobs(data["logp"], data["f_look"], data["top"], a)
        for m, scores in methods.items():
            nll, ent = token_logloss_entropy(scores, data["target"])
            rows.append({"method": m, "alpha": a, "temperature": 1 / (1 + a) if m == "temperature" else np.nan,
                         "logloss": float(nll.double().mean()), "tf_entropy": float(ent.double().mean())})  # fmt: skip
    return rows


def train_predictor_file(model_dir: str, model_name: str, labels_path: str, windows_path: str, head_out: str,
                         tradeoff_out: str, *, samplers: list[str], prompt_tokens: int, max_len: int, cal: dict,
                         seed: int, dtype: str, device: str, threads: int = 1, dataset: str = "",
                         chat: bool = False, gpus: int = 0, gpu_memory_gb: float = 80.0) -> None:  # fmt: skip
    """Train the head, test it on held-out labels, fit alpha per step bucket for each tilt sampler,
    measure the Mirostat target; write ``predictor.safetensors`` + ``predictor.json`` and the
    teacher-forced trade-off table. The head trains on the CPU (it is small; the frozen model's
    hidden states are computed once on the model's device)."""
    import time

    from entcal.models import load_model
    from entcal.prompts import select_examples

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model, tok = load_model(model_dir, model_name, dtype=dtype, device=device, gpus=gpus, gpu_memory_gb=gpu_memory_gb)
    labels = read_parquet(labels_path)
    pre = labels.drop_duplicates("prefix_id").sort_values("prefix_id")
    if not np.array_equal(pre["prefix_id"].to_numpy(), np.arange(len(pre))):
        raise ValueError(f"{labels_path}: prefix_id is not 0..n-1 (file edited or truncated?)")
    t0 = time.time()
    seqs = [list(x) for x in pre["prefix_ids"]]
    batch = job_batch(cal["batch_size"], model_dir, max(map(len, seqs)), device=device, gpus=gpus,
                      gpu_memory_gb=gpu_memory_gb, dtype=dtype)  # fmt: skip
    h = last_hidden(model, seqs, tok.pad_token_id, batch).cpu()
    train, test = labels[labels["split"] == "train"], labels[labels["split"] == "test"]
    if train.empty or test.empty:
        raise ValueError(f"{labels_path}: need labels in both splits (train {len(train)}, test {len(test)})")
    # early stopping on the last windows of the training side; the test windows stay untouched
    wins = sorted(train["window_id"].unique())
    val_wins = set(wins[len(wins) - max(1, round(cal["val_fraction"] * len(wins))):]) if len(wins) > 1 else set()
    fit, val = train[~train["window_id"].isin(val_wins)], train[train["window_id"].isin(val_wins)]
    hc = cal["head"]
    emb = model.get_output_embeddings().weight
    head = FutureEntropyHead(emb.detach().cpu(), rank=hc["rank"], hidden=hc["hidden"], mu=fit["label"].mean(),
                             sigma=max(fit["label"].std(), 1e-3))  # fmt: skip
    run = train_head(head, h, fit, steps=hc["steps"], lr=hc["lr"], batch_size=hc["batch_size"], seed=seed,
                     weight_decay=hc["weight_decay"], val=val)  # fmt: skip
    hist = run["loss"]
    head.eval()
    metrics = evaluate_head(head, h, train, test)
    log.info("head: %s", metrics)
    # alpha per bucket on further calibration windows (not the label windows)
    windows = read_parquet(windows_path)
    rest = windows[~windows["example_id"].isin(set(labels["window_id"]))]
    chosen = select_examples(tok, rest, prompt_tokens, max_len, max(1, max_len // 4), cal["fit_windows"], chat)
    lookahead = "one_step_lookahead" in samplers
    batch = job_batch(cal["batch_size"], model_dir, max(len(p) + len(r) for _, p, r in chosen), device=device, gpus=gpus,
                      gpu_memory_gb=gpu_memory_gb, dtype=dtype, lookahead=cal["candidates"] if lookahead else 0)  # fmt: skip
    head.to(emb.device)  # beside the model's last hidden states
    data = fit_data(model, [(p, r) for _, p, r in chosen], cal["candidates"], head, lookahead, batch, tok.pad_token_id)
    data = {k: v.detach() for k, v in data.items()}
    edges = cal["step_buckets"]
    bucket = torch.tensor(step_bucket(data["step"].numpy(), edges))
    fits = {}
    for s in [x for x in TILT_SAMPLERS if x in samplers or x == "future_entropy"]:
        f = data["f_head"] if s == "future_entropy" else data["f_look"]
        fits[s] = []
        for q, start in enumerate(edges):
            m = bucket == q
            if not m.any():
                fits[s].append({"bucket_start": start, "alpha": 0.0, "logloss": np.nan, "logloss_base": np.nan, "n": 0})
                continue
            r = fit_alpha(data["logp"][m], f[m], data["top"][m], data["target"][m], tuple(cal["alpha_bounds"]))
            fits[s].append({"bucket_start": start, **r})
        log.info("alpha %s: %s", s, fits[s])
    nll = -data["logp"].gather(-1, data["target"][:, None])[:, 0].double()
    equal = equal_entropy_comparison(data, fits, edges)
    log.info("equal-entropy comparison on the fit windows: %s", equal)
    tr = pd.DataFrame(tradeoff_rows(data, cal["tradeoff_alphas"]))
    Path(tradeoff_out).parent.mkdir(parents=True, exist_ok=True)
    tr.assign(model=model_name, dataset=dataset).to_csv(tradeoff_out, index=False, float_format="%.6g")
    lab_meta = json.loads(Path(labels_path).with_suffix(".json").read_text())
    n_fit_tokens = sum(len(p) + len(r) for _, p, r in chosen)
    settings = {
        "model": model_name, "dataset": dataset, "horizon": cal["horizon"], "candidates": cal["candidates"],
        "head": {k: hc[k] for k in ("rank", "hidden", "steps", "lr", "batch_size")},
        "label_mu": float(head.mu), "label_sigma": float(head.sigma),
        "train_loss_first": float(np.mean(hist[:20])), "train_loss_last": float(np.mean(hist[-20:])),
        "val_loss": run["val_loss"], "best_step": run["best_step"], "n_val": int(len(val)),
        "metrics": metrics, "step_buckets": edges, "alpha": fits, "equal_entropy_tf": equal,
        "fit_positions": int(len(nll)), "fit_windows": len(chosen),
        "mirostat_target": float(nll.mean()), "mirostat_eta": cal["mirostat_eta"],
        "label_forward_tokens": lab_meta["forward_tokens"],
        "fit_tokens": n_fit_tokens,  # one teacher-forced pass over the fit windows
        "fit_forward_tokens": n_fit_tokens * (1 + ("one_step_lookahead" in samplers) * cal["candidates"]),
        "seconds": round(time.time() - t0, 2),
    }  # fmt: skip
    save_head(head, head_out, settings)
    log.info("predictor: %s", {k: v for k, v in settings.items() if k != "alpha"})
