"""The file jobs of the future-entropy predictor: Monte Carlo labels (``calibration_labels`` rule)
and training, testing and the alpha fit (``train_predictor`` rule), one model x dataset each.

- :func:`labels_file` -> ``calibration/{dataset}/{model}/labels.parquet`` (columns in its docstring);
- :func:`train_predictor_file` -> ``predictor.safetensors`` + ``predictor.json`` (the head, its
  held-out metrics, alphas per step bucket, Mirostat target) and the teacher-forced trade-off table.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from entcal.batches import job_batch
from entcal.files import read_parquet, write_parquet
from entcal.labels import fit_data, label_prefixes, last_hidden, make_prefixes
from entcal.logs import Progress
from entcal.models import load_model
from entcal.predictor import FutureEntropyHead, evaluate_head, save_head, train_head
from entcal.prompts import calibration_windows, end_token_ids, select_examples
from entcal.samplers import TILTS
from entcal.tilt import equal_entropy_comparison, fit_alphas, tradeoff_rows

log = logging.getLogger(__name__)


def labels_file(
    model_dir: str,
    model_name: str,
    windows_path: str,
    out_path: str,
    *,
    prompt_tokens: int,
    max_len: int,
    cal: dict,
    seed: int,
    dtype: str,
    device: str,
    threads: int = 1,
    stop_at_eos: bool = True,
    chat: bool = False,
    gpus: int = 0,
    gpu_memory_gb: float = 80.0,
    examples_path: str | None = None,
    prompts_path: str | None = None,
) -> None:
    """Monte Carlo labels for one model x dataset: ``labels.parquet`` plus a JSON sidecar. The windows are
    :func:`entcal.prompts.calibration_windows` (``examples_path``, ``prompts_path``: for ``selection: first``).

    Columns: prefix_id, window_id, split (train | test), step (0-based generation step the prefix
    ends at), prefix_len, rank, candidate (token id), logprob (log p̂ of the candidate),
    onestep_entropy (entropy of the next distribution after the candidate, exact), label (mean over
    rollouts of the summed entropies of the next ``horizon`` steps, nats), label_rollouts (list),
    prefix_ids (list[int]).
    """
    torch.set_num_threads(threads)
    model, tok = load_model(model_dir, model_name, dtype=dtype, device=device, gpus=gpus, gpu_memory_gb=gpu_memory_gb)
    windows = calibration_windows(windows_path, examples_path, prompts_path)
    prefixes = make_prefixes(
        tok,
        windows,
        prompt_tokens,
        max_len,
        cal["prefixes_per_window"],
        cal["n_windows"],
        cal["test_fraction"],
        seed,
        chat,
    )
    if not prefixes:
        raise ValueError(f"{windows_path}: no calibration window holds {prompt_tokens + 1} tokens")
    batch = job_batch(
        cal["batch_size"],
        model_dir,
        max(len(p["prefix_ids"]) for p in prefixes) + 1,
        device=device,
        gpus=gpus,
        gpu_memory_gb=gpu_memory_gb,
        dtype=dtype,
        new_tokens=cal["horizon"],
    )
    t0 = time.time()
    df, spent = label_prefixes(
        model,
        tok,
        prefixes,
        candidates=cal["candidates"],
        rollouts=cal["rollouts"],
        horizon=cal["horizon"],
        batch_size=batch,
        seed=seed,
        stop_at_eos=stop_at_eos,
        end_ids=end_token_ids(tok, model_dir),
    )
    seconds = time.time() - t0
    df["prefix_ids"] = df["prefix_id"].map({p["prefix_id"]: p["prefix_ids"] for p in prefixes})
    side = {
        "model": model_name,
        "horizon": cal["horizon"],
        "candidates": cal["candidates"],
        "rollouts": cal["rollouts"],
        "n_prefixes": len(prefixes),
        "n_labels": len(df),
        "n_windows": int(df["window_id"].nunique()),
        "label_mean": float(df["label"].mean()),
        "label_sd": float(df["label"].std()),
        "forward_tokens": spent,
        "seconds": round(seconds, 2),
    }
    log.info("labels: %s", write_parquet(df, out_path, side))


VARIANTS = ("mid_layer", "half_labels", "small_head")


def _hidden(model, seqs, pad_id, batch, what: str, layer: int | None = None) -> torch.Tensor:
    progress = Progress(f"{what}: hidden states", len(seqs), unit="prefixes")
    h = last_hidden(model, seqs, pad_id, batch, layer=layer, on_batch=progress.update).cpu()
    progress.finish()
    return h


def _train(head, h, fit, val, hc: dict, seed: int, what: str) -> dict:
    progress = Progress(f"{what}: head training", hc["steps"], unit="steps", rate_unit="labels")
    run = train_head(
        head,
        h,
        fit,
        steps=hc["steps"],
        lr=hc["lr"],
        batch_size=hc["batch_size"],
        seed=seed,
        weight_decay=hc["weight_decay"],
        val=val,
        on_step=progress.update,
    )
    progress.finish(len(run["loss"]))  # early stopping may end it before hc["steps"]
    return run


def _variant_metrics(m: dict) -> dict:
    return {
        k: m[k]
        for k in (
            "n_train",
            "n_test",
            "r2_test",
            "r2_test_ci_low",
            "r2_test_ci_high",
            "rmse_test",
            "rmse_constant",
            "r2_onestep_linear",
            "noise_ceiling_r2",
        )
    }


def _train_variant(name, model, seqs, pad_id, batch, h, fit, val, train, test, emb, hc, seed) -> dict:
    """A head trained another way and tested on the same held-out labels (``calibration.variants``):
    ``mid_layer``: on the output of the middle decoder layer instead of the last hidden state;
    ``half_labels``: on the first half of the training windows (does the head still gain from labels?);
    ``small_head``: rank and width divided by 4 (does it gain from capacity?)."""
    if name not in VARIANTS:
        raise ValueError(f"calibration.variants: unknown variant {name!r} (known: {', '.join(VARIANTS)})")
    hv, fit_v, rank, hidden = h, fit, hc["rank"], hc["hidden"]
    if name == "mid_layer":
        hv = _hidden(model, seqs, pad_id, batch, f"variant {name}", layer=max(1, model.config.num_hidden_layers // 2))
    elif name == "half_labels":
        wins = sorted(fit["window_id"].unique())
        fit_v = fit[fit["window_id"].isin(wins[: max(1, len(wins) // 2)])]
    else:
        rank, hidden = max(1, rank // 4), max(1, hidden // 4)
    head = FutureEntropyHead(
        emb.detach().cpu(), rank=rank, hidden=hidden, mu=fit_v["label"].mean(), sigma=max(fit_v["label"].std(), 1e-3)
    )
    _train(head, hv, fit_v, val, hc, seed, f"variant {name}")
    m = evaluate_head(head.eval(), hv, fit_v if name == "half_labels" else train, test)
    return {"variant": name, **_variant_metrics(m)}


def _label_data(model, tok, labels, labels_path, cal, model_dir, model_name, device, gpus, gpu_memory_gb, dtype):
    """The frozen model's last hidden state at every labelled prefix, and the labels' splits: (hidden, prefixes,
    batch, fit, val, train, test). Early stopping uses the last training windows (``val``); test stays untouched."""
    pre = labels.drop_duplicates("prefix_id").sort_values("prefix_id")
    if not np.array_equal(pre["prefix_id"].to_numpy(), np.arange(len(pre))):
        raise ValueError(f"{labels_path}: prefix_id is not 0..n-1 (file edited or truncated?)")
    seqs = [list(x) for x in pre["prefix_ids"]]
    batch = job_batch(
        cal["batch_size"],
        model_dir,
        max(map(len, seqs)),
        device=device,
        gpus=gpus,
        gpu_memory_gb=gpu_memory_gb,
        dtype=dtype,
    )
    h = _hidden(model, seqs, tok.pad_token_id, batch, f"predictor {model_name}")
    train, test = labels[labels["split"] == "train"], labels[labels["split"] == "test"]
    if train.empty or test.empty:
        raise ValueError(f"{labels_path}: need labels in both splits (train {len(train)}, test {len(test)})")
    wins = sorted(train["window_id"].unique())
    val_wins = set(wins[len(wins) - max(1, round(cal["val_fraction"] * len(wins))) :]) if len(wins) > 1 else set()
    fit, val = train[~train["window_id"].isin(val_wins)], train[train["window_id"].isin(val_wins)]
    return h, seqs, batch, fit, val, train, test


def _new_head(emb, h, fit, val, hc: dict, seed: int, what: str, reseed: bool = False):
    """A head trained on ``fit`` with early stopping on ``val``; its batches from ``seed``, and its initialisation
    too with ``reseed`` (else from the torch generator's state: train_predictor seeds it when the job starts)."""
    if reseed:
        torch.manual_seed(seed)
    head = FutureEntropyHead(
        emb.detach().cpu(),
        rank=hc["rank"],
        hidden=hc["hidden"],
        mu=fit["label"].mean(),
        sigma=max(fit["label"].std(), 1e-3),
    )
    return head, _train(head, h, fit, val, hc, seed, what)


def train_head_file(
    model_dir: str,
    model_name: str,
    labels_path: str,
    calibration_path: str,
    head_out: str,
    *,
    head_seed: int,
    cal: dict,
    dtype: str,
    device: str,
    threads: int = 1,
    gpus: int = 0,
    gpu_memory_gb: float = 80.0,
) -> None:
    """One more head on the same labels, trained with ``head_seed`` (``train_head`` rule, the root searches' head
    seeds): ``head_out`` (.safetensors) and its JSON, which is the predictor's (``calibration_path``: buckets and
    settings) with this head's label scale, seed and held-out metrics."""
    torch.set_num_threads(threads)
    model, tok = load_model(model_dir, model_name, dtype=dtype, device=device, gpus=gpus, gpu_memory_gb=gpu_memory_gb)
    labels = read_parquet(labels_path)
    t0 = time.time()
    h, _, _, fit, val, train, test = _label_data(
        model, tok, labels, labels_path, cal, model_dir, model_name, device, gpus, gpu_memory_gb, dtype
    )
    emb = model.get_output_embeddings().weight
    head, run = _new_head(emb, h, fit, val, cal["head"], head_seed, f"head seed {head_seed} {model_name}", reseed=True)
    head.eval()
    metrics = evaluate_head(head, h, train, test)
    log.info("head seed %d: %s", head_seed, metrics)
    settings = {
        **json.loads(Path(calibration_path).read_text()),
        "head_seed": head_seed,
        "label_mu": float(head.mu),
        "label_sigma": float(head.sigma),
        "val_loss": run["val_loss"],
        "best_step": run["best_step"],
        "metrics": metrics,
        "variants": [],
        "seconds": round(time.time() - t0, 2),
    }
    Path(head_out).parent.mkdir(parents=True, exist_ok=True)
    save_head(head, head_out, settings)


def train_predictor_file(
    model_dir: str,
    model_name: str,
    labels_path: str,
    windows_path: str,
    head_out: str,
    tradeoff_out: str,
    *,
    samplers: list[str],
    prompt_tokens: int,
    max_len: int,
    cal: dict,
    seed: int,
    dtype: str,
    device: str,
    threads: int = 1,
    dataset: str = "",
    chat: bool = False,
    gpus: int = 0,
    gpu_memory_gb: float = 80.0,
    examples_path: str | None = None,
    prompts_path: str | None = None,
) -> None:
    """Train the head, test it on held-out labels, fit alpha per step bucket for each tilt sampler,
    measure the Mirostat target; write ``predictor.safetensors`` + ``predictor.json`` and the
    teacher-forced trade-off table. The head trains on the CPU (it is small; the frozen model's
    hidden states are computed once on the model's device)."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model, tok = load_model(model_dir, model_name, dtype=dtype, device=device, gpus=gpus, gpu_memory_gb=gpu_memory_gb)
    labels = read_parquet(labels_path)
    t0 = time.time()
    h, seqs, batch, fit, val, train, test = _label_data(
        model, tok, labels, labels_path, cal, model_dir, model_name, device, gpus, gpu_memory_gb, dtype
    )
    hc = cal["head"]
    emb = model.get_output_embeddings().weight
    head, run = _new_head(emb, h, fit, val, hc, seed, f"predictor {model_name}")
    hist = run["loss"]
    head.eval()
    metrics = evaluate_head(head, h, train, test)
    log.info("head: %s", metrics)
    variants = [{"variant": "head", **_variant_metrics(metrics)}]
    for name in cal.get("variants") or []:  # evaluation only: the samplers use the head above
        variants.append(
            _train_variant(name, model, seqs, tok.pad_token_id, batch, h, fit, val, train, test, emb, hc, seed)
        )
        log.info("predictor variant %s: %s", name, variants[-1])
    # alpha per bucket on further calibration windows (not the label windows)
    windows = calibration_windows(windows_path, examples_path, prompts_path)
    rest = windows[~windows["example_id"].isin(set(labels["window_id"]))]
    chosen = select_examples(tok, rest, prompt_tokens, max_len, max(1, max_len // 4), cal["fit_windows"], chat)
    lookahead = "one_step_lookahead" in samplers
    batch = job_batch(
        cal["batch_size"],
        model_dir,
        max(len(p) + len(r) for _, p, r in chosen),
        device=device,
        gpus=gpus,
        gpu_memory_gb=gpu_memory_gb,
        dtype=dtype,
        lookahead=cal["candidates"] if lookahead else 0,
    )
    head.to(emb.device)  # beside the model's last hidden states
    progress = Progress(f"predictor {model_name}: alpha fit windows", len(chosen), unit="windows")
    data = fit_data(
        model,
        [(p, r) for _, p, r in chosen],
        cal["candidates"],
        head,
        lookahead,
        batch,
        tok.pad_token_id,
        on_batch=progress.update,
    )
    progress.finish()
    data = {k: v.detach() for k, v in data.items()}
    edges = cal["step_buckets"]
    tilts = [x for x in TILTS if x in samplers or x == "future_entropy"]
    progress = Progress(
        f"predictor {model_name}: alpha fits", len(tilts) * len(edges), unit="fits", rate_unit="positions"
    )
    fits = fit_alphas(data, tilts, edges, cal["alpha_bounds"], on_fit=progress.update)
    progress.finish()
    for s, fit_s in fits.items():
        log.info("alpha %s: %s", s, fit_s)
    nll = -data["logp"].gather(-1, data["target"][:, None])[:, 0].double()
    equal = equal_entropy_comparison(data, fits, edges)
    log.info("equal-entropy comparison on the fit windows: %s", equal)
    tr = pd.DataFrame(tradeoff_rows(data, cal["tradeoff_alphas"]))
    Path(tradeoff_out).parent.mkdir(parents=True, exist_ok=True)
    tr.assign(model=model_name, dataset=dataset).to_csv(tradeoff_out, index=False, float_format="%.6g")
    lab_meta = json.loads(Path(labels_path).with_suffix(".json").read_text())
    n_fit_tokens = sum(len(p) + len(r) for _, p, r in chosen)
    settings = {
        "model": model_name,
        "dataset": dataset,
        "horizon": cal["horizon"],
        "candidates": cal["candidates"],
        "head": {k: hc[k] for k in ("rank", "hidden", "steps", "lr", "batch_size")},
        "label_mu": float(head.mu),
        "label_sigma": float(head.sigma),
        "train_loss_first": float(np.mean(hist[:20])),
        "train_loss_last": float(np.mean(hist[-20:])),
        "val_loss": run["val_loss"],
        "best_step": run["best_step"],
        "n_val": int(len(val)),
        "metrics": metrics,
        "variants": variants,
        "step_buckets": edges,
        "alpha": fits,
        "equal_entropy_tf": equal,
        "fit_positions": int(len(nll)),
        "fit_windows": len(chosen),
        "mirostat_target": float(nll.mean()),
        "mirostat_eta": cal["mirostat_eta"],
        "label_forward_tokens": lab_meta["forward_tokens"],
        "fit_tokens": n_fit_tokens,  # one teacher-forced pass over the fit windows
        "fit_forward_tokens": n_fit_tokens * (1 + ("one_step_lookahead" in samplers) * cal["candidates"]),
        "seconds": round(time.time() - t0, 2),
    }
    save_head(head, head_out, settings)
    log.info("predictor: %s", {k: v for k, v in settings.items() if k != "alpha"})
