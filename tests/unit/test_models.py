"""One loading path for local, trained and hub models; pinned downloads from a warm offline cache."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from entcal.hub import download_model
from entcal.models import ModelLoadError, build_model, count_params, load_model

SHA = "0123456789abcdef0123456789abcdef01234567"


def test_local_folder_roundtrip(tiny_model_dir):
    model, tok = load_model(tiny_model_dir, "tiny", device="cpu")
    x = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        a = model(x).logits
        b = load_model(tiny_model_dir, "tiny", device="cpu")[0](x).logits
    assert torch.equal(a, b) and a.shape == (1, 4, len(tok))
    assert tok.pad_token_id is not None


def test_missing_folder_names_the_model(tmp_path):
    with pytest.raises(ModelLoadError, match="'qwen_missing'.*folder not found"):
        load_model(tmp_path / "absent", "qwen_missing")


def test_folder_without_weights_is_rejected(tmp_path, tiny_model_dir):
    d = tmp_path / "noweights"
    shutil.copytree(tiny_model_dir, d)
    for w in d.glob("*.safetensors"):
        w.unlink()
    with pytest.raises(ModelLoadError, match="'broken'.*no weight files"):
        load_model(d, "broken")


def test_truncated_weights_give_a_clear_error(tmp_path, tiny_model_dir):
    d = tmp_path / "cut"
    shutil.copytree(tiny_model_dir, d)
    w = next(d.glob("*.safetensors"))
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(ModelLoadError, match="'cut'.*cannot load weights"):
        load_model(d, "cut")


@pytest.mark.parametrize("kind", ["llama", "gpt_neox"])
def test_count_params_nonembedding(kind):
    m = build_model({"type": kind, "hidden_size": 16, "layers": 2, "heads": 2, "ffn": 32}, 100, 64)
    c = count_params(m)
    emb = 100 * 16
    untied = m.get_output_embeddings().weight is not m.get_input_embeddings().weight
    assert c["n_params_total"] == sum(p.numel() for p in m.parameters())
    assert c["n_params_nonembedding"] == c["n_params_total"] - emb - (emb if untied else 0)


def _warm_cache(cache, src, repo="org/tiny-lm"):
    """The huggingface_hub cache layout a completed snapshot_download leaves behind."""
    root = cache / f"models--{repo.replace('/', '--')}"
    snap = root / "snapshots" / SHA
    blobs = root / "blobs"
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    for i, f in enumerate(sorted(src.iterdir())):
        blob = blobs / f"blob{i}"
        shutil.copy(f, blob)
        (snap / f.name).symlink_to(blob)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(SHA)
    return repo


def assert_loads_like(out, original):
    """The downloaded folder gives bit-identical logits to the model it came from."""
    x = torch.tensor([[3, 1, 4, 1, 5]])
    with torch.no_grad():
        a = load_model(out, "tiny_hf", device="cpu")[0](x).logits
        b = load_model(original, "tiny", device="cpu")[0](x).logits
    assert torch.equal(a, b)


def test_pinned_download_from_offline_cache_loads_like_the_original(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = _warm_cache(tmp_path / "cache", tiny_model_dir)
    out = download_model("tiny_hf", repo, SHA, str(tmp_path / "models" / "tiny_hf"), cache_dir=str(tmp_path / "cache"))
    src = json.loads((out / "entcal_source.json").read_text())
    assert src["revision"] == SHA and src["files"] == {"hardlinked": len(list(tiny_model_dir.iterdir()))}
    blob = (
        tmp_path / "cache" / f"models--{repo.replace('/', '--')}" / "snapshots" / SHA / "model.safetensors"
    ).resolve()
    assert (
        not (out / "model.safetensors").is_symlink() and (out / "model.safetensors").stat().st_ino == blob.stat().st_ino
    )
    assert_loads_like(out, tiny_model_dir)


def test_across_file_systems_the_download_links_to_the_cache_and_never_copies(tmp_path, tiny_model_dir, monkeypatch):
    import errno

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = _warm_cache(tmp_path / "cache", tiny_model_dir)

    def no_hard_links(a, b):  # what os.link does across file systems
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr("entcal.hub.os.link", no_hard_links)
    monkeypatch.setattr("shutil.copy2", lambda *a, **k: pytest.fail("a copy was made"))
    out = download_model("tiny_hf", repo, SHA, str(tmp_path / "models" / "tiny_hf"), cache_dir=str(tmp_path / "cache"))
    weights = out / "model.safetensors"
    blobs = tmp_path / "cache" / f"models--{repo.replace('/', '--')}" / "blobs"
    assert weights.is_symlink() and Path(os.readlink(weights)).parent == blobs.resolve()
    assert json.loads((out / "entcal_source.json").read_text())["files"] == {
        "symlinked": len(list(tiny_model_dir.iterdir()))
    }
    assert_loads_like(out, tiny_model_dir)


def test_a_revision_without_safetensors_downloads_its_bin_weights(tmp_path, tiny_model_dir, monkeypatch):
    """Pythia's step branches publish pytorch_model.bin only: the download takes them (loaded with
    torch.load(weights_only=True) by transformers) and loads like the original."""
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bin_dir = tmp_path / "bin_model"
    bin_dir.mkdir()
    for f in tiny_model_dir.iterdir():
        if f.suffix != ".safetensors":
            shutil.copy(f, bin_dir / f.name)
    torch.save(AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict(), bin_dir / "pytorch_model.bin")
    assert not list(bin_dir.glob("*.safetensors")) and (bin_dir / "pytorch_model.bin").is_file()
    repo = _warm_cache(tmp_path / "cache", bin_dir)
    out = download_model("tiny_hf", repo, SHA, str(tmp_path / "models" / "tiny_hf"), cache_dir=str(tmp_path / "cache"))
    assert (out / "pytorch_model.bin").is_file() and not list(out.glob("*.safetensors"))
    assert_loads_like(out, tiny_model_dir)


def test_unknown_revision_offline_names_the_model(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = _warm_cache(tmp_path / "cache", tiny_model_dir)
    with pytest.raises(ModelLoadError, match="'tiny_hf'"):
        download_model("tiny_hf", repo, "f" * 40, str(tmp_path / "m"), cache_dir=str(tmp_path / "cache"))
    assert not (tmp_path / "m").exists()


def test_a_branch_download_records_the_commit_it_resolved_to(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = _warm_cache(tmp_path / "cache", tiny_model_dir)
    out = download_model("tiny_hf", repo, "main", str(tmp_path / "m"), cache_dir=str(tmp_path / "cache"))
    src = json.loads((out / "entcal_source.json").read_text())
    assert (src["revision"], src["commit"]) == ("main", SHA)


def test_pin_writes_a_lock_the_workflow_applies_and_names_gated_models(tmp_path):
    import types

    import yaml
    from huggingface_hub import errors as hf_errors

    from entcal.config import apply_revision_lock
    from entcal.hub import pin_revisions

    cfg = {
        "models": {
            "a": {"source": "hf", "repo_id": "org/a", "revision": "main"},
            "b": {"source": "hf", "repo_id": "org/b", "revision": "c" * 40},
            "t": {"source": "train"},
        },
        "datasets": {"wt": {"source": "hf", "repo_id": "org/wt", "revision": "main"}},
        "mauve": {"featurizers": {}},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    shas = {
        ("model", "org/a", "main"): "1" * 40,
        ("model", "org/b", "c" * 40): "c" * 40,
        ("dataset", "org/wt", "main"): "2" * 40,
    }

    class Api:
        def model_info(self, repo, revision):
            return types.SimpleNamespace(sha=shas[("model", repo, revision)])

        def dataset_info(self, repo, revision):
            return types.SimpleNamespace(sha=shas[("dataset", repo, revision)])

    lock = pin_revisions(tmp_path / "c.yaml", tmp_path / "lock.yaml", api=Api())
    assert yaml.safe_load((tmp_path / "lock.yaml").read_text()) == lock
    assert apply_revision_lock(cfg, lock) == []
    assert cfg["models"]["a"]["revision"] == "1" * 40 and cfg["datasets"]["wt"]["revision"] == "2" * 40
    assert cfg["models"]["b"]["revision"] == "c" * 40
    # a lock written for another repo is not applied, and says so
    cfg["models"]["a"] = {"source": "hf", "repo_id": "org/other", "revision": "main"}
    notes = apply_revision_lock(cfg, lock)
    assert cfg["models"]["a"]["revision"] == "main" and "models.a" in notes[0]

    class Gated(Api):
        def model_info(self, repo, revision):
            raise hf_errors.GatedRepoError(
                "401", response=types.SimpleNamespace(headers={}, status_code=401, request=None)
            )

    with pytest.raises(RuntimeError, match="models.a: org/a is gated"):
        pin_revisions(tmp_path / "c.yaml", tmp_path / "lock2.yaml", api=Gated())


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without CUDA")
def test_a_job_put_on_a_gpu_without_one_fails_at_once_naming_what_torch_reports():
    from entcal.models import DeviceError, resolve_device

    with pytest.raises(DeviceError) as err:
        resolve_device("auto", gpus=2)  # a hub model's job: GPUs in its resources, device auto
    msg = str(err.value)
    assert "expects a CUDA GPU (2 GPU(s) in its resources) but finds none" in msg
    assert f"torch {torch.__version__}" in msg and "cuda.is_available() = False" in msg
    assert ("a CPU-only build" in msg) == (torch.version.cuda is None) and (
        "CPU-only build: install a CUDA build" in msg or "nvidia-smi" in msg
    )
    with pytest.raises(DeviceError, match=r"\(device: cuda in the configuration\)"):
        resolve_device("cuda")
    # the CPU on purpose, and auto without GPUs, run on the CPU
    assert resolve_device("cpu", gpus=4).type == "cpu" and resolve_device("auto", gpus=0).type == "cpu"


@pytest.mark.parametrize(
    "cfg, context",
    [
        ({"model_type": "gpt_neox", "max_position_embeddings": 2048}, 2048),  # EleutherAI/pythia-*: under 4096
        ({"model_type": "llama", "max_position_embeddings": 4096}, 4096),  # meta-llama/Llama-2-*-hf
        ({"model_type": "qwen2", "max_position_embeddings": 32768}, 4096),  # Qwen/Qwen2.5-*
        ({"model_type": "gpt2", "n_positions": 1024}, 1024),
        ({"model_type": "gemma3", "text_config": {"max_position_embeddings": 1024}}, 1024),
        ({"model_type": "x"}, 4096),  # the config says nothing: the configured context
    ],
)
def test_the_context_is_the_configured_one_never_past_the_models(tmp_path, cfg, context):
    from entcal.models import effective_context

    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert effective_context(tmp_path, 4096) == context


def test_prompt_selection_keeps_within_the_models_context(tmp_path, tiny_model_dir):
    """A model whose context is shorter than the configured one (Pythia's 2048 under 4096): prompt + new
    tokens stay within its own, and the sidecar records both."""
    import pandas as pd
    from conftest import TEXTS, make_prompts

    short = tmp_path / "short"
    shutil.copytree(tiny_model_dir, short)
    cfg = json.loads((short / "config.json").read_text())
    (short / "config.json").write_text(json.dumps({**cfg, "max_position_embeddings": 40}))
    ex = pd.DataFrame(
        {
            "example_id": range(3),
            "doc_id": "d",
            "char_start": 0,
            "prefix": "",
            "instruction": "",
            "text": ["x " * 5 + t for t in TEXTS],
        }
    )
    out = make_prompts(
        short,
        ex,
        tmp_path / "p.parquet",
        prompt_tokens=20,
        max_new_tokens=12,
        min_reference_tokens=4,
        n_prompts=3,
        max_context=4096,
    )
    side = json.loads(out.with_suffix(".json").read_text())
    assert (side["max_context"], side["max_context_configured"], side["model_context"]) == (40, 4096, 40)
    df = pd.read_parquet(out)
    assert (df["prompt_len"] + 12 < 40).all()


def test_a_repository_that_needs_its_own_code_is_refused_naming_the_model(tmp_path, tiny_model_dir):
    """A config.json whose architecture only the repository's Python files define (auto_map, a model_type
    transformers does not ship): an error naming the model and the fix, never trust_remote_code."""
    import json

    from entcal.models import check_model_dir

    d = tmp_path / "custom"
    shutil.copytree(tiny_model_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(
        model_type="mystery_lm",
        auto_map={
            "AutoConfig": "configuration_mystery.MysteryConfig",
            "AutoModelForCausalLM": "modeling_mystery.MysteryForCausalLM",
        },
    )
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(
        ModelLoadError,
        match=r"model 'mystery': .*model_type 'mystery_lm' is not an architecture "
        r"transformers ships; the repository's own code \(configuration_mystery"
        r".MysteryConfig, modeling_mystery.MysteryForCausalLM\)",
    ):
        check_model_dir(d, "mystery")
    assert check_model_dir(tiny_model_dir, "tiny") == tiny_model_dir  # a native architecture passes
