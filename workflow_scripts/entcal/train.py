"""CPU training of the demo's small causal LMs on one dataset's encoded training stream.

Output folder (``save_pretrained`` layout, loads with :func:`entcal.models.load_model`):

- ``config.json``, ``model.safetensors``, ``generation_config.json``, tokenizer files;
- ``entcal.json``: metadata (architecture, parameter counts, tokens seen, seed, wall time);
- ``train_log.csv``: step, tokens, loss (nats/token, training batch), lr, seconds;
- ``checkpoints/tokens_{n}/``: intermediate ``save_pretrained`` snapshots (with tokenizer) after
  ``n`` training tokens, at the configured fractions of the budget (for data-scaling studies).

Training: random windows of ``seq_len`` tokens, AdamW (0.9, 0.95), linear warmup then cosine
decay to ``min_lr_ratio`` of the peak (transformers' scheduler), gradient clipping at 1.0,
optional bf16 autocast (``bf16``): used only where the CPU computes bf16 natively (AVX-512 BF16 or
AMX, as torch reports), where it pays off from about 0.8M non-embedding parameters; on a CPU without
it (AVX2 only) bf16 is emulated and a step is about 6x slower than float32, so training stays in
float32 there. ``entcal.json`` records the choice (``autocast``, ``cpu_capability``).
"""

from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from entcal.config import checkpoint_tokens
from entcal.logs import Progress
from entcal.models import build_model, count_params, native_bf16
from entcal.runtime import allocator_settings

log = logging.getLogger(__name__)


def train_model(
    train_ids_path: str,
    tokenizer_dir: str,
    out_dir: str,
    arch: dict,
    train_cfg: dict,
    seed: int = 0,
    threads: int = 1,
) -> dict:
    """Train one model; returns the metadata written to ``entcal.json``.

    ``train_cfg`` keys: tokens, lr, seq_len, batch_size, warmup_steps, weight_decay,
    min_lr_ratio, bf16 (bool), checkpoint_fractions (list of floats in (0, 1)), max_positions.
    """
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    torch.set_num_threads(threads)
    t0 = time.time()
    ids = torch.from_numpy(np.load(train_ids_path).astype(np.int64))
    tok = load_tokenizer_dir(tokenizer_dir)
    seq_len, batch = int(train_cfg["seq_len"]), int(train_cfg["batch_size"])
    if len(ids) <= seq_len + 1:
        raise ValueError(f"training stream has {len(ids)} tokens, fewer than seq_len + 1 = {seq_len + 1}")
    steps = max(1, int(train_cfg["tokens"]) // (seq_len * batch))
    model = build_model(arch, vocab_size=len(tok), max_positions=int(train_cfg["max_positions"]), seed=seed)
    counts = count_params(model)
    use_bf16 = bool(train_cfg.get("bf16", False)) and native_bf16()
    autocast = "bfloat16" if use_bf16 else "float32"
    log.info(
        "arch %s: %s; %d steps of %dx%d tokens; %s (bf16 asked: %s, native bf16 on this %s CPU: %s)",
        arch,
        counts,
        steps,
        batch,
        seq_len,
        autocast,
        bool(train_cfg.get("bf16", False)),
        torch.backends.cpu.get_cpu_capability(),
        native_bf16(),
    )

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": train_cfg["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=train_cfg["lr"],
        betas=(0.9, 0.95),
    )
    sched = get_cosine_with_min_lr_schedule_with_warmup(
        opt,
        num_warmup_steps=min(int(train_cfg["warmup_steps"]), max(1, steps // 10)),
        num_training_steps=steps,
        min_lr_rate=train_cfg["min_lr_ratio"],
    )
    gen = torch.Generator().manual_seed(seed)
    ckpt_steps = checkpoint_tokens(train_cfg["tokens"], seq_len, batch, train_cfg.get("checkpoint_fractions", []))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    model.train()
    progress = Progress(f"train {out.name}", steps, unit="steps")
    for step in range(1, steps + 1):
        starts = torch.randint(0, len(ids) - seq_len - 1, (batch,), generator=gen)
        x = torch.stack([ids[s : s + seq_len + 1] for s in starts.tolist()])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            logits = model(input_ids=x[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % 10 == 0 or step == steps:
            rows.append((step, step * batch * seq_len, loss.item(), sched.get_last_lr()[0], time.time() - t0))
        progress.update(step, step * batch * seq_len)
        if step in ckpt_steps:
            ck = out / "checkpoints" / f"tokens_{ckpt_steps[step]}"
            model.save_pretrained(ck)
            tok.save_pretrained(ck)
    progress.finish()
    model.eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    with open(out / "train_log.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "tokens", "loss", "lr", "seconds"])
        w.writerows(rows)
    meta = {
        "arch": arch,
        **counts,
        "tokens_seen": steps * batch * seq_len,
        "steps": steps,
        "final_train_loss": rows[-1][2],
        "seed": seed,
        "autocast": autocast,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": threads,
        "allocator": allocator_settings(),
        "train_seconds": round(time.time() - t0, 1),
        "train_stream_tokens": int(len(ids)),
    }
    (out / "entcal.json").write_text(json.dumps(meta, indent=2))
    log.info("done: %s", meta)
    return meta


def load_tokenizer_dir(path: str):
    """Load the dataset tokenizer (a tokenizer-only folder, so no model-folder check)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True)
