"""What every result was made from, by content (entcal.records): hashes against hashlib, records checked where
they are read, stale and damaged outputs told apart, and the stat shortcut never hiding a rewritten file."""

import hashlib
import json
import os
from pathlib import Path

import pytest

from entcal import records
from entcal.records import (
    RecordError,
    check_current,
    check_inputs,
    digest,
    mark_stale,
    record_path,
    survey,
    write_record,
)


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def test_digests_are_sha256_of_the_bytes_and_of_a_folders_listing(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"x" * 10_000_001)  # more than one read block
    assert digest(f)[0] == sha(f.read_bytes())
    d = tmp_path / "m"
    (d / "sub").mkdir(parents=True)
    (d / "w.safetensors").write_bytes(b"weights")
    (d / "sub" / "c.json").write_bytes(b"{}")
    (d / ".snakemake_timestamp").write_text("")  # Snakemake's marker and records are not content
    (d / ".x.entcal.json").write_text("{}")
    want = sha(f"sub/c.json\0{sha(b'{}')}\nw.safetensors\0{sha(b'weights')}\n".encode())
    assert digest(d)[0] == want


def test_a_file_rewritten_in_place_is_found_even_with_its_time_put_back(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("a,b\n1,2\n3,4\n")
    write_record(f, "aggregate", {})
    assert check_current(f)["rule"] == "aggregate"
    st = f.stat()
    f.write_text("a,b\n1,2\n3,5\n")  # same size
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # the change time cannot be put back
    with pytest.raises(RecordError, match=r"t.csv is not what its job \(aggregate\) wrote: its content changed"):
        check_current(f)


def test_an_unchanged_file_is_not_read_again(tmp_path, monkeypatch):
    f = tmp_path / "big.parquet"
    f.write_bytes(os.urandom(1000))
    write_record(f, "generate", {})
    records._MEMO.clear()
    reads = []
    monkeypatch.setattr(records, "_hash_file", lambda p: reads.append(p) or sha(Path(p).read_bytes()))
    check_current(f)
    assert reads == []  # size, times and inode as recorded: the recorded hash
    os.utime(f, (1, 1))
    check_current(f)
    assert reads == [f]  # a moved time: read once, and the content is the same


def test_a_weight_changed_through_a_hard_link_changes_the_model_folder(tmp_path):
    """The hub cache and the model folder share the blob's inode: a change to either is a change to the folder."""
    blob = tmp_path / "cache" / "blob"
    blob.parent.mkdir()
    blob.write_bytes(b"w" * 100)
    folder = tmp_path / "models" / "m--0123456789"
    folder.mkdir(parents=True)
    os.link(blob, folder / "model.safetensors")
    write_record(folder, "download_model", {})
    with open(blob, "r+b") as fh:
        fh.write(b"v")
    with pytest.raises(RecordError, match="not what its job .download_model. wrote"):
        check_current(folder)


def test_a_dangling_weights_link_is_named(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    blob = tmp_path / "blob"
    blob.write_bytes(b"w")
    os.symlink(blob, folder / "model.safetensors")
    write_record(folder, "download_model", {})
    blob.unlink()  # the hub cache cleaned
    with pytest.raises(RecordError, match=r"model.safetensors is a link to .*blob, which does not exist"):
        check_current(folder)
    damaged, _ = survey([], [folder])
    assert "which does not exist" in damaged[folder.resolve()][1][0]


def _made(tmp_path, name, rule, inputs):
    out = tmp_path / name
    out.write_text(f"{name} from " + ",".join(sorted(map(str, inputs))))
    write_record(out, rule, {str(p): digest(p)[0] for p in inputs})
    return out


def test_inputs_made_from_different_versions_of_one_file_do_not_meet(tmp_path):
    weights = tmp_path / "weights"
    weights.write_bytes(b"old")
    prompts = _made(tmp_path, "prompts", "select_prompts", [weights])
    gen = _made(tmp_path, "gen", "generate", [weights, prompts])
    weights.write_bytes(b"new")
    scores = _made(tmp_path, "scores", "score", [weights, prompts])
    with pytest.raises(
        RecordError, match=r"(gen and .*scores|scores and .*gen) were made from different versions of .*weights"
    ):
        check_inputs([gen, scores])
    with pytest.raises(RecordError, match="was made from another version of .*weights than the one there now"):
        check_inputs([weights, prompts])  # a job reading the weights and the prompts made from the old ones
    assert set(check_inputs([scores])) == {str(scores)}
    ok = check_inputs([gen, prompts])
    assert ok == {str(gen): digest(gen)[0], str(prompts): digest(prompts)[0]}


def test_survey_tells_damaged_from_stale_and_marks_only_the_stale(tmp_path):
    weights = tmp_path / "weights"
    weights.write_bytes(b"old")
    prompts = _made(tmp_path, "prompts", "select_prompts", [weights])
    gen = _made(tmp_path, "gen", "generate", [weights, prompts])
    table = _made(tmp_path, "summary.csv", "aggregate", [gen])
    gone = _made(tmp_path, "gone", "score", [tmp_path / "prompts"])
    gone.unlink()  # missing outputs are Snakemake's to remake
    assert survey([tmp_path]) == ({}, {})
    weights.write_bytes(b"new")
    table.write_text("cut short")
    damaged, stale = survey([tmp_path])
    assert set(damaged) == {table.resolve()} and "changed since its job (aggregate)" in damaged[table.resolve()][1][0]
    assert set(stale) == {prompts.resolve(), gen.resolve()}
    assert stale[gen.resolve()] == ("generate", [f"made from {weights.resolve()}, whose content changed since"])
    flag = tmp_path / "flags" / "generate"
    flag.parent.mkdir()
    flag.write_text("")
    os.utime(flag, (0, 0))
    mark_stale(gen, flag)
    assert gen.stat().st_mtime == 1 and flag.stat().st_mtime == 2  # newer than this output, older than every other
    # a damaged input marks nothing until it is dealt with: its readers wait
    weights.write_bytes(b"old")
    write_record(weights, "download_model", {})
    weights.write_bytes(b"bad")
    damaged, stale = survey([tmp_path])
    assert weights.resolve() in damaged and prompts.resolve() not in stale and gen.resolve() not in stale


def test_a_copied_folder_finds_its_own_inputs_and_refreshes_its_stats(tmp_path):
    import shutil

    a = tmp_path / "a"
    a.mkdir()
    prompts = _made(a, "prompts", "select_prompts", [])
    _made(a, "gen", "generate", [prompts])
    b = tmp_path / "b"
    shutil.copytree(a, b)  # new inodes
    (a / "prompts").write_text("changed in the original")
    assert survey([b]) == ({}, {})  # the copy's records name their inputs relative to themselves
    rec = json.loads(record_path(b / "gen").read_text())
    assert rec["output"]["files"][""][3] == (b / "gen").stat().st_ino  # refreshed: no rereading next time


def test_text_dir_skips_links_out_of_its_folder_and_counts_bad_utf8(tmp_path, caplog):
    from entcal.corpora import read_text_dir

    root = tmp_path / "corpus"
    root.mkdir()
    (root / "a.txt").write_text("plain")
    (root / "b.txt").write_bytes(b"caf\xe9 and \xff\xfe")
    secret = tmp_path / "elsewhere.txt"
    secret.write_text("not part of the corpus")
    os.symlink(secret, root / "c.txt")
    os.symlink(root / "a.txt", root / "d.txt")  # inside: a document
    with caplog.at_level("WARNING"):
        docs = dict(read_text_dir(root))
    assert set(docs) == {"a.txt", "b.txt", "d.txt"} and docs["d.txt"] == "plain"
    assert docs["b.txt"] == b"caf\xe9 and \xff\xfe".decode("utf-8", errors="replace")
    text = caplog.text
    assert "1 links lead out of the folder" in text and "c.txt" in text
    assert "1 files are not valid UTF-8; 3 invalid byte sequences were replaced" in text


def test_yte_configurations_are_found(tmp_path):
    from entcal.config_files import yte_templates

    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("__use_yte__: true\nresults_dir: ?f'results/{1+1}'\n")
    b.write_text("results_dir: results/x  # __use_yte__: true in a comment\n")
    assert yte_templates([a, b, tmp_path / "missing.yaml"]) == [str(a)]


def test_outputs_dated_in_the_future_are_found(tmp_path):
    import time

    from entcal.records import from_the_future

    a = _made(tmp_path, "a.csv", "aggregate", [])
    b = _made(tmp_path, "b.csv", "aggregate", [])
    os.utime(b, (time.time() + 3600, time.time() + 3600))
    assert [p for p, _ in from_the_future([tmp_path])] == [b] and a.stat().st_mtime < time.time()


def test_an_end_of_text_string_inside_a_document_is_counted(caplog):
    from entcal.tokenization import EOS, encode_documents, train_bpe

    texts = ["plain text here", f"a {EOS} b {EOS} c", "more plain text"]
    tok = train_bpe(texts, 300)
    with caplog.at_level("WARNING"):
        ids = encode_documents(tok, texts)
    assert "1 documents hold the end-of-text string '<|endoftext|>' as text (2 times in all)" in caplog.text
    assert int((ids == tok.eos_token_id).sum()) == 3 + 2  # one after each document, and the two in the text


def test_the_version_is_one_and_a_folder_of_another_version_is_named(tmp_path):
    import tomllib

    import entcal
    from entcal.results import _versioned

    root = Path(__file__).resolve().parents[2]
    assert tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"] == entcal.__version__

    @_versioned
    def load(results_dir):
        raise KeyError("entce_pooled")

    (tmp_path / "provenance.json").write_text(json.dumps({"entcal_version": "0.2.0"}))
    with pytest.raises(
        KeyError, match=rf"entce_pooled is not in {tmp_path}: that run was written by entcal 0.2.0, this is"
    ):
        load(tmp_path)
    (tmp_path / "provenance.json").write_text(json.dumps({"entcal_version": entcal.__version__}))
    with pytest.raises(KeyError, match="^'entce_pooled'$"):
        load(results_dir=tmp_path)  # the same version: the error as it was
