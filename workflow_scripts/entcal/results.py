"""Load a finished run's files by name: no paths assembled by hand.

    from entcal.results import load_generations, load_summary

    summary = load_summary("results/demo")                        # tables/summary.csv
    g = load_generations("s3", "code", "ancestral-t1", "results/demo")
    print(g.loc[0, "prompt_text"] + "|" + g.loc[0, "text"])       # prompt, then the model's continuation
    g.loc[0, "entropy"], g.loc[0, "logloss"]                      # per-step arrays (nats)

A run is found through the configuration it wrote (``{results_dir}/config.effective.yaml``, every
default filled in), so paths come from :class:`entcal.grid.Grid`, as in the rules. Parquet files are
checked against their sidecars (:mod:`entcal.files`) before they are read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from entcal.files import read_parquet
from entcal.grid import PARTS, Grid, part_kind, part_of
from entcal.records import check_current


def grid(results_dir: str | Path = "results/demo") -> Grid:
    """The grid of a finished (or running) run, from the configuration it wrote, with its paths resolved
    from where the run is now: ``results_dir`` is the folder given (a moved or copied run reads its own
    files, never the original's), and a relative ``downloads_dir`` or local model path is taken relative to
    the directory the run started in (the folder given, less the recorded relative ``results_dir``), not
    the reader's current directory."""
    import yaml

    folder = Path(results_dir).expanduser().resolve()
    f = folder / "config.effective.yaml"
    if not f.is_file():
        raise FileNotFoundError(
            f"{f} not found: is {results_dir} a results_dir? (the dump_config rule writes it; "
            "a run that has not started has none)"
        )
    cfg = yaml.safe_load(f.read_text())
    recorded = Path(cfg["results_dir"])
    n = len(recorded.parts)
    start = folder.parents[n - 1] if not recorded.is_absolute() and n and folder.parts[-n:] == recorded.parts else None
    cfg["results_dir"] = str(folder)
    if start is not None:
        if not Path(cfg["downloads_dir"]).is_absolute():
            cfg["downloads_dir"] = str(start / cfg["downloads_dir"])
        for spec in cfg["models"].values():
            if spec.get("source") == "local" and not Path(spec["path"]).is_absolute():
                spec["path"] = str(start / spec["path"])
    return Grid(cfg)


def _versioned(load):
    """A loader whose missing column (``KeyError``) names the version that wrote the folder, where it is not
    this one."""
    import functools
    import inspect
    import json

    import entcal

    @functools.wraps(load)
    def wrapper(*args, **kwargs):
        try:
            return load(*args, **kwargs)
        except KeyError as err:
            bound = inspect.signature(load).bind(*args, **kwargs)
            bound.apply_defaults()
            rd = bound.arguments["results_dir"]
            try:
                wrote = json.loads((Path(rd) / "provenance.json").read_text()).get("entcal_version", "before 0.3.0")
            except (OSError, ValueError, TypeError):
                raise err from None
            if wrote == entcal.__version__:
                raise
            raise KeyError(
                f"{err.args[0] if err.args else err!s} is not in {rd}: that run was written by entcal {wrote}, "
                f"this is {entcal.__version__}, whose tables differ (docs/outputs.md). Rerun the workflow on it with "
                f"this version, or read it with entcal {wrote}"
            ) from err

    return wrapper


def _checked(path, read):
    """A table read after checking it against its record (entcal.records): one cut short or edited is refused,
    naming the fix."""
    check_current(path)
    return read(path)


def _table(results_dir, kind: str, extras: bool, read) -> pd.DataFrame:
    g = grid(results_dir)
    paths = [g.path(part_kind(kind, p)) for p in (PARTS if extras else ("paper",))]
    frames = [
        _checked(p, read) for p in paths if p == paths[0] or Path(p).is_file()
    ]  # the extras' only where the run has any
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


@_versioned
def load_summary(results_dir: str | Path = "results/demo", extras: bool = False) -> pd.DataFrame:
    """``tables/summary.csv``: one row per model x dataset x setting of the paper (docs/outputs.md); with
    ``extras``, followed by the rows of ``tables/summary_extra.csv`` (the samplers beyond the paper)."""
    return _table(results_dir, "summary", extras, pd.read_csv)


@_versioned
def load_per_step(results_dir: str | Path = "results/demo", extras: bool = False) -> pd.DataFrame:
    """``tables/per_step.parquet``: one row per model x dataset x setting x step (``extras``: with
    ``per_step_extra.parquet``)."""
    return _table(results_dir, "per_step", extras, pd.read_parquet)


@_versioned
def load_per_prompt(results_dir: str | Path = "results/demo", extras: bool = False) -> pd.DataFrame:
    """``tables/per_prompt.parquet``: one row per model x dataset x setting x prompt (``extras``: with
    ``per_prompt_extra.parquet``)."""
    return _table(results_dir, "per_prompt", extras, pd.read_parquet)


def _tokenizer(g: Grid, model: str, dataset: str):
    from entcal.models import load_tokenizer

    return load_tokenizer(g.model_path(model, dataset), model)


@_versioned
def load_prompts(model: str, dataset: str, results_dir: str | Path = "results/demo", text: bool = True) -> pd.DataFrame:
    """A model's prompts on a dataset: example_id, prompt_len, reference_len, prompt_ids, reference_ids,
    and with ``text`` the decoded ``prompt_text`` and ``reference_text`` (the model's tokenizer)."""
    g = grid(results_dir)
    df = read_parquet(g.path("prompts", dataset=dataset, model=model))
    if text:
        tok = _tokenizer(g, model, dataset)
        df["prompt_text"] = [tok.decode(list(p), skip_special_tokens=False) for p in df["prompt_ids"]]
        df["reference_text"] = [tok.decode(list(r), skip_special_tokens=False) for r in df["reference_ids"]]
    return df


@_versioned
def load_scores(
    model: str, dataset: str, results_dir: str | Path = "results/demo", part: str = "paper"
) -> pd.DataFrame:
    """``scores/{dataset}/{model}.parquet`` (``part="extra"``: ``scores_extra/…``, the settings beyond the
    paper): one row per prompt x sampler setting (docs/outputs.md)."""
    g = grid(results_dir)
    return read_parquet(g.path(part_kind("scores", part), dataset=dataset, model=model), {"model": model})


@_versioned
def load_generations(
    model: str, dataset: str, setting: str, results_dir: str | Path = "results/demo", text: bool = True
) -> pd.DataFrame:
    """One row per prompt: the generation (example_id, prompt_len, n_tokens, stopped_at_eos, token_ids,
    entropy, logprob, text), its prompt and human reference (prompt_ids, reference_ids and, with
    ``text``, prompt_text and reference_text) and the reference's per-token ``logloss`` and
    ``tf_entropy`` under the same setting. Per-step columns hold numpy arrays (nats)."""
    g = grid(results_dir)
    part = part_of(g.setting(model, setting))  # a clear error for a setting the model does not run
    gen = read_parquet(g.path("generations", dataset=dataset, model=model, setting=setting), {"model": model})
    prompts = load_prompts(model, dataset, results_dir, text=text).drop(columns=["prompt_len"])
    sc = load_scores(model, dataset, results_dir, part)
    sc = sc.loc[sc["setting"] == setting, ["example_id", "logloss", "tf_entropy", "n_outside"]]
    out = gen.merge(prompts, on="example_id", how="left", validate="one_to_one")
    out = out.merge(sc, on="example_id", how="left", validate="one_to_one")
    for col in ("entropy", "logprob", "logloss", "tf_entropy"):
        out[col] = [np.asarray(x, dtype=np.float64) for x in out[col]]
    return out
