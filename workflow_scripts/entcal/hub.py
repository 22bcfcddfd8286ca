"""Pinned-revision downloads of hub models into a local ``save_pretrained``-style folder.

Download rules are local rules (they run where the network is); every later job loads the
local folder offline. Errors name the model: a gated repository without a token, a missing
revision, an unknown repository, a full disk.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from entcal.config import hub_entries
from entcal.models import ModelLoadError, check_model_dir

log = logging.getLogger(__name__)

# weights in safetensors, configs and tokenizer files; no duplicate .bin / .pth / gguf weights
DEFAULT_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "*.py"]
# a revision that publishes no safetensors (Pythia's step branches: pytorch_model*.bin only) is fetched
# again with these; transformers reads them with torch.load(weights_only=True)
BIN_PATTERNS = ["pytorch_model*.bin"]


def download_model(
    name: str,
    repo_id: str,
    revision: str,
    out_dir: str,
    cache_dir: str | None = None,
    allow_patterns: list[str] | None = None,
    token: str | None = None,
) -> Path:
    """Snapshot ``repo_id`` at ``revision`` and materialise it in ``out_dir``.

    With ``HF_HUB_OFFLINE=1`` this succeeds only from a warm cache (``cache_dir``), which is how
    the tests exercise it. Writes ``entcal_source.json`` (repo, revision, resolved commit).
    """
    from huggingface_hub import errors as hf_errors
    from huggingface_hub import snapshot_download

    patterns = allow_patterns or DEFAULT_PATTERNS
    try:
        snap = snapshot_download(
            repo_id=repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=patterns, token=token
        )
        if not allow_patterns and not any(Path(snap).glob("*.safetensors")):
            log.info(
                "model %s: %s@%s publishes no safetensors weights: fetching %s", name, repo_id, revision, BIN_PATTERNS
            )
            snap = snapshot_download(
                repo_id=repo_id,
                revision=revision,
                cache_dir=cache_dir,
                allow_patterns=[*patterns, *BIN_PATTERNS],
                token=token,
            )
    except hf_errors.GatedRepoError as err:
        raise ModelLoadError(
            f"model {name!r}: {repo_id} is gated; accept its licence on the hub and set HF_TOKEN ({err})"
        ) from err
    except hf_errors.RevisionNotFoundError as err:
        raise ModelLoadError(f"model {name!r}: revision {revision!r} not found in {repo_id}") from err
    except hf_errors.RepositoryNotFoundError as err:
        raise ModelLoadError(f"model {name!r}: repository {repo_id!r} not found (or private)") from err
    except hf_errors.LocalEntryNotFoundError as err:
        raise ModelLoadError(
            f"model {name!r}: {repo_id}@{revision} is not in the local cache and the hub is unreachable "
            f"or HF_HUB_OFFLINE is set ({err})"
        ) from err
    except OSError as err:
        raise ModelLoadError(f"model {name!r}: download of {repo_id}@{revision} failed: {err}") from err
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    links: dict[str, int] = {}
    try:
        shutil.copytree(snap, tmp, symlinks=False, copy_function=lambda a, b: _link(a, b, links))
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelLoadError(f"model {name!r}: cannot write {out} (disk full?): {err}") from err
    # the hub cache keeps a snapshot under snapshots/<commit>: record what the revision resolved to
    (tmp / "entcal_source.json").write_text(
        json.dumps(
            {
                "repo_id": repo_id,
                "revision": revision,
                "commit": Path(snap).name,
                "snapshot": str(snap),
                "files": links,
            },
            indent=2,
        )
    )
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    check_model_dir(out, name)
    log.info(
        "model %s: %s@%s -> %s (files from the hub cache %s, not copied)",
        name,
        repo_id,
        revision,
        out,
        ", ".join(f"{n} {k}" for k, n in sorted(links.items())) or "none",
    )
    return out


def _link(src: str, dst: str, counts: dict | None = None) -> None:
    """Put a cached blob into the model folder without a second copy on disk: a hard link where the
    folder and the hub cache share a file system, else a symbolic link to the blob (the usual cluster
    layout, repository in $HOME and HF_HOME on scratch; jobs then read the cache, which must stay).
    Never a copy."""
    real = os.path.realpath(src)
    try:
        os.link(real, dst)
        kind = "hardlinked"
    except OSError:
        os.symlink(real, dst)
        kind = "symlinked"
    if counts is not None:
        counts[kind] = counts.get(kind, 0) + 1


def download_dataset(name: str, repo_id: str, revision: str, out_dir: str, cache_dir: str | None = None) -> Path:
    """Snapshot a hub dataset repository at ``revision`` into ``out_dir`` (files as published)."""
    from huggingface_hub import errors as hf_errors
    from huggingface_hub import snapshot_download

    try:
        snap = snapshot_download(repo_id=repo_id, revision=revision, repo_type="dataset", cache_dir=cache_dir)
    except hf_errors.GatedRepoError as err:
        raise RuntimeError(f"dataset {name!r}: {repo_id} is gated; set HF_TOKEN ({err})") from err
    except (hf_errors.RevisionNotFoundError, hf_errors.RepositoryNotFoundError) as err:
        raise RuntimeError(f"dataset {name!r}: {repo_id}@{revision} not found ({err})") from err
    except (hf_errors.LocalEntryNotFoundError, OSError) as err:
        raise RuntimeError(f"dataset {name!r}: download of {repo_id}@{revision} failed: {err}") from err
    out = Path(out_dir)
    shutil.rmtree(out, ignore_errors=True)
    links: dict[str, int] = {}
    shutil.copytree(snap, out, symlinks=False, copy_function=lambda a, b: _link(a, b, links))
    log.info(
        "dataset %s: %s@%s -> %s (files from the hub cache %s, not copied)",
        name,
        repo_id,
        revision,
        out,
        ", ".join(f"{n} {k}" for k, n in sorted(links.items())) or "none",
    )
    return out


def pin_revisions(config_path: str | Path, out_path: str | Path, api=None, token: str | None = None) -> dict:
    """Resolve every hub model, dataset and featurizer revision of a configuration to its commit and
    write the lock file the workflow reads (``revisions_lock``). Needs the hub (run it where the
    network is); a gated repository needs ``HF_TOKEN``. Returns the lock.
    """
    import yaml
    from huggingface_hub import HfApi
    from huggingface_hub import errors as hf_errors

    api = api or HfApi(token=token)
    config = yaml.safe_load(Path(config_path).read_text())
    lock: dict = {}
    for section, name, entry in hub_entries(config):
        repo, rev = entry["repo_id"], entry["revision"]
        try:
            info = (api.dataset_info if section == "datasets" else api.model_info)(repo, revision=rev)
        except hf_errors.GatedRepoError as err:
            raise RuntimeError(
                f"{section}.{name}: {repo} is gated; accept its licence and set HF_TOKEN ({err})"
            ) from err
        except (hf_errors.RevisionNotFoundError, hf_errors.RepositoryNotFoundError) as err:
            raise RuntimeError(f"{section}.{name}: {repo}@{rev} not found ({err})") from err
        lock.setdefault(section, {})[name] = {"repo_id": repo, "revision": rev, "commit": info.sha}
        log.info("%s.%s: %s@%s = %s", section, name, repo, rev, info.sha)
    Path(out_path).write_text(yaml.safe_dump(lock, sort_keys=True))
    return lock


if __name__ == "__main__":  # python -m entcal.hub pin config/config.yaml config/revisions.lock.yaml
    import argparse

    ap = argparse.ArgumentParser(description="Pin hub revisions of a configuration to commits (needs the hub).")
    ap.add_argument("command", choices=["pin"])
    ap.add_argument("config")
    ap.add_argument("lock")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    pin_revisions(a.config, a.lock, token=os.environ.get("HF_TOKEN"))
    print(f"wrote {a.lock}; set revisions_lock: {a.lock} in the configuration")
