"""The future-entropy predictor: a small head on the frozen model, its training and its evaluation.

:class:`FutureEntropyHead`: on the frozen model's last hidden state h, one forward gives f for the
whole vocabulary, f(h, y) = mu + sigma (u(h) · P e_y + s(h) + g(h) log p̂(y | h)), with e_y the model's
frozen output embedding, u a small MLP, P a learned projection to the same rank. The labels it learns
(:mod:`entcal.labels`) are the k-step truncated future entropy of the base model after each top
candidate, the practical form of the paper's Algorithm 1 (one predictor for all steps, labels from the
unadjusted model). Trained with MSE and early stopping; saved as safetensors plus a JSON of settings.
No model forward passes and no job files here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from torch import nn


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


def window_bootstrap_r2(
    y: np.ndarray,
    preds: dict[str, np.ndarray],
    windows: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """Percentile intervals of each predictor's R^2 on held-out labels, resampling whole windows (the labels
    of one window share its text, so they are not independent draws): {name: (low, high)}."""
    rng = np.random.default_rng(seed)
    ids, inv = np.unique(windows, return_inverse=True)
    members = [np.flatnonzero(inv == j) for j in range(len(ids))]
    stats = {k: [] for k in preds}
    for _ in range(n_boot):
        idx = np.concatenate([members[j] for j in rng.integers(0, len(ids), len(ids))])
        for k, p in preds.items():
            stats[k].append(r2(y[idx], p[idx]))
    q = (100 * (1 - level) / 2, 100 * (1 + level) / 2)
    return {k: tuple(float(x) for x in np.percentile(v, q)) for k, v in stats.items()}


def _predict(head: FutureEntropyHead, h: torch.Tensor, df: pd.DataFrame) -> torch.Tensor:
    pid = torch.tensor(df["prefix_id"].to_numpy())
    cand = torch.tensor(df["candidate"].to_numpy())[:, None]
    lp = torch.tensor(df["logprob"].to_numpy(), dtype=torch.float32)[:, None]
    return head(h[pid], lp, cand)[:, 0]


def train_head(
    head: FutureEntropyHead,
    h: torch.Tensor,
    labels: pd.DataFrame,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    weight_decay: float = 0.05,
    val: pd.DataFrame | None = None,
    eval_every: int = 25,
    patience: int = 8,
    on_step=None,
) -> dict:
    """MSE on the observed (prefix, candidate) labels only; ``h`` (n_prefixes, d) indexed by prefix_id.

    With ``val`` (labels of other windows), early stopping: the validation MSE is measured every
    ``eval_every`` steps, training stops after ``patience`` evaluations without improvement and the
    best weights are kept. ``on_step(step, examples_seen)`` after each step (progress).
    Returns {"loss": per-step training loss (standardised units),
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
        if on_step is not None:
            on_step(step, step * len(b))
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
    ci = window_bootstrap_r2(y_te, {"head": p_te, "onestep": one}, test["window_id"].to_numpy())
    return {
        "n_train": int(len(train)),
        "n_test": int(len(test)),
        "r2_train": r2(y_tr, _predict(head, h, train).numpy()),
        "r2_test": r2(y_te, p_te),
        "r2_test_ci_low": ci["head"][0],
        "r2_test_ci_high": ci["head"][1],  # 95 %, test windows resampled
        "n_test_windows": int(test["window_id"].nunique()),
        "rmse_test": float(np.sqrt(np.mean((y_te - p_te) ** 2))),
        "rmse_constant": float(np.sqrt(np.mean((y_te - const) ** 2))),
        "r2_constant": r2(y_te, const),  # at most 0: the training mean, not the test mean
        "r2_onestep_linear": r2(y_te, one),
        "r2_onestep_linear_ci_low": ci["onestep"][0],
        "r2_onestep_linear_ci_high": ci["onestep"][1],
        "rmse_onestep_linear": float(np.sqrt(np.mean((y_te - one) ** 2))),
        "label_noise_var": noise,
        "noise_ceiling_r2": float(1 - noise / np.var(y_te)) if np.isfinite(noise) else float("nan"),
    }


def save_head(head: FutureEntropyHead, path: str | Path, settings: dict) -> None:
    """``path`` (.safetensors) holds the head's own tensors; the JSON beside it its settings."""
    state = {k: v.detach().contiguous() for k, v in head.state_dict().items()}
    save_file(state, str(path))
    Path(path).with_suffix(".json").write_text(json.dumps(settings, indent=2))


def load_head(path: str | Path, model) -> tuple[FutureEntropyHead, dict]:
    settings = json.loads(Path(path).with_suffix(".json").read_text())
    emb = model.get_output_embeddings().weight
    head = FutureEntropyHead(emb, rank=settings["head"]["rank"], hidden=settings["head"]["hidden"])
    head.load_state_dict(load_file(str(path)))
    return head.to(emb.device).eval(), settings
