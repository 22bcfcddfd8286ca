"""What a results folder was made with, and what is stale when Snakemake has no record of it.

Snakemake keeps what it knows about each output (params, code, input set) in ``.snakemake/`` of the
working directory, not next to the results: after ``rm -rf .snakemake``, in a fresh clone, or for a
results folder moved or copied elsewhere, it has no record and judges by file times only, so a
changed setting or code would silently keep the old results. This module closes that gap.

- ``{results_dir}/provenance.json`` (written by ``dump_config`` next to ``config.effective.yaml``): the
  results configuration's SHA-256 and every stage's code fingerprint (:mod:`entcal.fingerprint`).
- A marker in ``.snakemake/entcal/`` of the working directory, written after each run, says that this
  working directory's Snakemake records cover that results folder as ``provenance.json`` describes it.
- At start-up (:func:`stale_stages`), when the marker is missing or describes another state, the recorded
  configuration and fingerprints are compared with the current ones. Each difference names the stages
  it makes stale (a changed section of the configuration: the rules that read it, :data:`SECTION_READERS`;
  a changed fingerprint: that stage). Their rerun flags (``{results_dir}/provenance/rerun/<rule>``, an input
  of every rule, kept at time 0 otherwise) are rewritten with the reasons, so Snakemake reruns every job
  of those rules and, by file times, what follows. Where nothing differs, nothing reruns: a moved or
  copied results folder, or a clone of the same commit, is taken as it is.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import entcal
from entcal.records import output_of, records_under

log = logging.getLogger(__name__)

PROVENANCE = "provenance.json"
RERUN_DIR = "provenance/rerun"

# Which rules read each section of the results configuration (rules/*.smk: their params, input functions
# and resources that change results). Downstream rules follow by file times, so a rule that only reads
# the outputs of one listed here need not be listed. A dotted key (analysis.n_boot) narrows its section:
# the longest listed prefix of a changed key decides. A section not listed here (seed, for one) marks
# every stage stale.
SECTION_READERS = {
    "datasets": ("prepare_dataset", "select_prompts", "mauve_excerpts"),
    "models": (
        "train_model",
        "convert_gguf",
        "select_prompts",
        "generate",
        "score",
        "score_extra",
        "power_law",
        "mauve_excerpts",
    ),
    "generation": (
        "select_prompts",
        "generate",
        "calibration_labels",
        "train_predictor",
    ),
    "samplers": ("generate", "score", "score_extra"),
    "scoring": ("score", "score_extra"),
    "precision": ("generate", "score", "score_extra", "calibration_labels", "train_predictor"),
    "dtype": ("generate", "score", "score_extra", "calibration_labels", "train_predictor", "mauve_features"),
    "analysis": (
        "aggregate",
        "aggregate_extra",
        "scaling_fits",
        "plot_per_step",
        "calibration_labels",
        "train_predictor",
    ),
    "analysis.max_len": ("aggregate", "aggregate_extra", "calibration_labels", "train_predictor"),
    "analysis.size_axis": ("scaling_fits", "plot_scaling"),
    "analysis.n_boot": ("aggregate", "calibration_table"),  # bootstrap replicates: EntCE, the calibrated points
    "analysis.smoothing": ("plot_per_step",),
    "analysis.smoothing_logloss": ("plot_per_step",),
    "analysis.reference_start": ("aggregate", "aggregate_extra", "context_fits", "plot_context"),
    "analysis.estimator": (
        "aggregate",
        "aggregate_extra",
        "scaling_fits",
        "plot_scaling",
        "plot_tradeoff",
        "plot_tradeoff_extra",
        "plot_data_scaling",
    ),
    "fidelity": ("aggregate", "aggregate_extra"),  # the summary's column; its presets show in the keys they set
    "training": ("train_tokenizer", "train_model"),
    "calibration": ("calibration_labels", "train_predictor", "generate", "score_extra"),
    "calibration.variants": ("train_predictor",),  # heads for comparison only
    "mauve": (
        "mauve_excerpts",
        "mauve_features",
        "mauve_buckets",
        "mauve_summary",
        "mauve_summary_extra",
        "calibration_table",
    ),
    "theory": ("singleton_mass", "power_law"),
    "exact": ("future_entropy_exact",),
    "exclude_models": (),  # which models exist, not how: their jobs appear or disappear
    "revisions_lock": (),  # a lock's effect shows in models.*.revision, compared there
    "results_dir": (),  # where, not what
    "downloads_dir": (),
}


def config_sha256(results_config: dict) -> str:
    return hashlib.sha256(json.dumps(results_config, sort_keys=True, default=str).encode()).hexdigest()


def provenance(results_config: dict, code: dict[str, str]) -> dict:
    """The record ``dump_config`` writes: the configuration's hash, the configuration itself and the
    stages' code fingerprints."""
    return {
        "config_sha256": config_sha256(results_config),
        "entcal_version": entcal.__version__,
        "code": dict(sorted(code.items())),
        "config": results_config,
    }


def _flatten(x, prefix=""):
    if isinstance(x, dict):
        out = {}
        for k, v in x.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out or {prefix: {}}
    return {prefix: x}


def differences(old: dict, new: dict) -> list[tuple[str, str, object, object]]:
    """``(kind, key, old, new)`` for each difference between two provenance records: kind ``config``
    (a dotted key of the configuration) or ``code`` (a stage's fingerprint)."""
    out = []
    a, b = _flatten(old.get("config", {})), _flatten(new.get("config", {}))
    for k in sorted(set(a) | set(b)):
        if a.get(k, "<absent>") != b.get(k, "<absent>"):
            out.append(("config", k, a.get(k, "<absent>"), b.get(k, "<absent>")))
    ca, cb = old.get("code", {}), new.get("code", {})
    for k in sorted(set(ca) | set(cb)):
        if ca.get(k) != cb.get(k):
            out.append(("code", k, ca.get(k), cb.get(k)))
    return out


def stages_for(diffs, rule_scripts: dict[str, str]) -> dict[str, list[str]]:
    """``{rule: [reason, ...]}``: the rules each difference makes stale. ``rule_scripts``: every rule
    that carries a rerun flag, with its adapter's stem (the fingerprint's key)."""
    out: dict[str, list[str]] = {}
    for kind, key, old, new in diffs:
        if kind == "code":
            rules = [r for r, s in rule_scripts.items() if s == key]
            reason = f"code of {key} changed (fingerprint {old} -> {new})"
        else:
            parts = key.split(".")
            prefix = next(
                (".".join(parts[:i]) for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in SECTION_READERS), None
            )
            rules = [r for r in (SECTION_READERS[prefix] if prefix else tuple(rule_scripts)) if r in rule_scripts]
            reason = f"{key}: {_short(old)} -> {_short(new)}"
        for r in rules:
            out.setdefault(r, []).append(reason)
    return out


def _short(v, n=60) -> str:
    s = json.dumps(v, default=str) if not isinstance(v, str) else v
    return s if len(s) <= n else s[: n - 3] + "..."


def marker_path(workdir: str | Path, results_dir: str | Path) -> Path:
    key = hashlib.sha256(str(Path(results_dir).resolve()).encode()).hexdigest()[:16]
    return Path(workdir) / ".snakemake" / "entcal" / f"results-{key}.json"


def _file_sha(p: Path) -> str | None:
    try:
        return hashlib.sha256(p.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def write_marker(workdir: str | Path, results_dir: str | Path) -> None:
    """After a run: this working directory's Snakemake records cover ``results_dir`` as its
    ``provenance.json`` now describes it."""
    rd = Path(results_dir)
    m = marker_path(workdir, rd)
    m.parent.mkdir(parents=True, exist_ok=True)
    tmp = m.with_suffix(".tmp")
    tmp.write_text(
        json.dumps(
            {
                "results_dir": str(rd.resolve()),
                "provenance_sha256": _file_sha(rd / PROVENANCE),
                "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
        )
    )
    os.replace(tmp, m)


def has_record(workdir: str | Path, results_dir: str | Path) -> bool:
    """Whether the marker says this working directory's Snakemake records cover ``results_dir`` as it is."""
    rd = Path(results_dir)
    try:
        m = json.loads(marker_path(workdir, rd).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return m.get("provenance_sha256") == _file_sha(rd / PROVENANCE)


def stale_stages(
    workdir, results_dir, current: dict, rule_scripts: dict[str, str]
) -> tuple[dict[str, list[str]], bool]:
    """``({rule: reasons}, checked)``: the stages whose existing results were made with other settings
    or code, where Snakemake has no record of the results folder (``checked`` False: it has one, or there
    is no recorded provenance: nothing to compare)."""
    rd = Path(results_dir)
    p = rd / PROVENANCE
    if not p.is_file() or has_record(workdir, rd):
        return {}, False
    try:
        old = json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{p} is not valid JSON ({err}): delete it and rerun with --forcerun dump_config") from err
    return stages_for(differences(old, current), rule_scripts), True


def unrecorded_results(workdir: str | Path, results_dir: str | Path) -> list[Path]:
    """Results (outputs with a record, :mod:`entcal.records`) in a folder whose ``provenance.json`` is missing
    where this working directory's Snakemake has no record of the folder as it is (the file was deleted after a
    run, or the folder comes from elsewhere): the configuration and code they were made with are then unknown,
    and none of them can be taken as current. (A run that never asked for ``dump_config``'s output, in the working
    directory that made it, is covered by Snakemake's own records.)"""
    rd = Path(results_dir)
    if (rd / PROVENANCE).is_file() or has_record(workdir, rd):
        return []
    found = []
    for rp in records_under(rd):
        if len(found) >= 3:
            break
        if output_of(rp).exists() and output_of(rp).name not in (PROVENANCE, "config.effective.yaml"):
            found.append(output_of(rp))
    return found


def rerun_flag(results_dir: str | Path, rule: str) -> Path:
    return Path(results_dir) / RERUN_DIR / rule


def ensure_flags(results_dir: str | Path, rules) -> None:
    """Create the missing rerun flags at time 0 (never newer than an output)."""
    for r in rules:
        f = rerun_flag(results_dir, r)
        if not f.exists():
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text("")
            os.utime(f, (0, 0))


def raise_flags(results_dir: str | Path, stale: dict[str, list[str]]) -> None:
    """Rewrite the flags of stale rules (now, with the reasons): Snakemake reruns their jobs."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    for r, reasons in stale.items():
        f = rerun_flag(results_dir, r)
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(
            f"{stamp}: stale where Snakemake had no record of these results:\n" + "".join(f"  {x}\n" for x in reasons)
        )
