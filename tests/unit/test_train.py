"""The demo trainer learns, checkpoints, and leaves a folder the shared loader opens."""

import json

import numpy as np
import pandas as pd
import torch

from entcal.models import load_model
from entcal.tokenization import build_tokenizer
from entcal.train import train_model
from conftest import TEXTS


def test_training_lowers_loss_and_saves_loadable_checkpoints(tmp_path, caplog, monkeypatch):
    docs = pd.DataFrame({"doc_id": ["a", "b", "c"], "split": "train", "source": "x", "n_chars": 0, "text": TEXTS})
    from entcal.files import write_parquet

    write_parquet(docs, tmp_path / "docs.parquet")
    build_tokenizer(str(tmp_path / "docs.parquet"), str(tmp_path / "tok"), str(tmp_path / "ids.npy"), vocab_size=300)
    ids = np.load(tmp_path / "ids.npy")
    assert ids.max() < 300 and ids.dtype == np.uint16
    cfg = {
        "tokens": 64 * 8 * 40,
        "lr": 1e-2,
        "seq_len": 64,
        "batch_size": 8,
        "warmup_steps": 5,
        "weight_decay": 0.1,
        "min_lr_ratio": 0.1,
        "bf16": False,
        "checkpoint_fractions": [0.5],
        "max_positions": 128,
    }
    arch = {"type": "llama", "hidden_size": 32, "layers": 1, "heads": 2, "ffn": 64}
    monkeypatch.setenv("ENTCAL_PROGRESS_INTERVAL", "0")  # a progress line every step
    with caplog.at_level("INFO", logger="entcal.progress"):
        meta = train_model(str(tmp_path / "ids.npy"), str(tmp_path / "tok"), str(tmp_path / "m"), arch, cfg, seed=0)
    lines = [r.getMessage() for r in caplog.records if r.name == "entcal.progress"]
    assert lines[0].startswith("train m: 1/40 steps (2 %), ") and "tokens/s" in lines[0] and " left" in lines[0]
    assert lines[-1].startswith("train m: 40/40 steps (100 %)") and lines[-1].endswith("about 0:00 left")
    log = pd.read_csv(tmp_path / "m" / "train_log.csv")
    assert meta["steps"] == 40 and meta["tokens_seen"] == 64 * 8 * 40
    assert log["loss"].iloc[-1] < 0.6 * np.log(300)  # far below the uniform model's log V
    assert json.loads((tmp_path / "m" / "entcal.json").read_text())["n_params_nonembedding"] > 0
    ck = tmp_path / "m" / "checkpoints" / f"tokens_{64 * 8 * 20}"
    final, tok = load_model(tmp_path / "m", "m", device="cpu")
    half, _ = load_model(ck, "ck", device="cpu")
    x = torch.from_numpy(ids[:64].astype(np.int64))[None]
    with torch.no_grad():
        l_final = torch.nn.functional.cross_entropy(final(x).logits[0, :-1], x[0, 1:])
        l_half = torch.nn.functional.cross_entropy(half(x).logits[0, :-1], x[0, 1:])
    assert l_final < l_half


def test_bf16_autocast_only_where_the_cpu_has_it_natively(tmp_path, monkeypatch):
    import entcal.train as tr
    from entcal.files import write_parquet

    docs = pd.DataFrame({"doc_id": ["a", "b", "c"], "split": "train", "source": "x", "n_chars": 0, "text": TEXTS})
    write_parquet(docs, tmp_path / "docs.parquet")
    build_tokenizer(str(tmp_path / "docs.parquet"), str(tmp_path / "tok"), str(tmp_path / "ids.npy"), vocab_size=300)
    cfg = {
        "tokens": 64 * 2 * 3,
        "lr": 1e-2,
        "seq_len": 64,
        "batch_size": 2,
        "warmup_steps": 1,
        "weight_decay": 0.1,
        "min_lr_ratio": 0.1,
        "bf16": True,
        "max_positions": 128,
    }
    arch = {"type": "llama", "hidden_size": 16, "layers": 1, "heads": 2, "ffn": 32}
    used = []
    real = torch.autocast

    def spy(*a, enabled=True, **k):
        used.append(enabled)
        return real(*a, enabled=enabled, **k)

    monkeypatch.setattr(tr.torch, "autocast", spy)
    for native, want in ((False, "float32"), (True, "bfloat16")):
        monkeypatch.setattr(tr, "native_bf16", lambda native=native: native)
        used.clear()
        meta = train_model(str(tmp_path / "ids.npy"), str(tmp_path / "tok"), str(tmp_path / f"m{native}"), arch, cfg)
        assert meta["autocast"] == want and set(used) == {native}
        assert json.loads((tmp_path / f"m{native}" / "entcal.json").read_text())["cpu_capability"]
    meta = train_model(
        str(tmp_path / "ids.npy"), str(tmp_path / "tok"), str(tmp_path / "off"), arch, dict(cfg, bf16=False)
    )
    assert meta["autocast"] == "float32"
