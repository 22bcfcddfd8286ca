"""Resumable jobs: a long generation or scoring job writes its rows shard by shard.

Shards live in ``{output}.shards/shard-{k:05d}.parquet`` beside the job's output (not a declared
Snakemake output, so they survive a killed or failed job). Each is written to a temporary name and
renamed, and carries in its Parquet metadata the job's fingerprint (model weights, settings,
prompts) and the example ids it holds. On a rerun a shard is used only if it reads back whole,
its fingerprint matches and it holds exactly the expected examples; otherwise it is redone, with
a warning that says why. When every shard is there, they are merged into the output and removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from entcal.files import write_parquet

log = logging.getLogger(__name__)

META_KEY = b"entcal_shard"


def model_fingerprint(model_dir: str | Path) -> list:
    """Names, sizes and modification times of a model folder's files: retraining or replacing the
    model invalidates its shards."""
    root = Path(model_dir)
    out = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and "checkpoints" not in p.relative_to(root).parts:
            st = p.stat()
            out.append([str(p.relative_to(root)), st.st_size, st.st_mtime_ns])
    return out


class ShardStore:
    """Shards of one job's output; see the module docstring."""

    def __init__(self, out_path: str | Path, fingerprint: dict):
        self.out = Path(out_path)
        self.dir = self.out.with_name(self.out.name + ".shards")
        blob = json.dumps(fingerprint, sort_keys=True, default=str).encode()
        self.fingerprint = hashlib.sha256(blob).hexdigest()
        self.resumed = 0
        self.redone = 0

    def path(self, k: int) -> Path:
        return self.dir / f"shard-{k:05d}.parquet"

    def read(self, k: int, example_ids: list[int]) -> tuple[pd.DataFrame | None, str | None]:
        """(rows, None) if shard k is complete and belongs to this job; (None, why) otherwise."""
        p = self.path(k)
        if not p.exists():
            return None, "missing"
        try:
            table = pq.read_table(p)
            meta = json.loads((table.schema.metadata or {}).get(META_KEY, b"{}"))
            df = table.to_pandas()
        except Exception as err:  # noqa: BLE001 (a truncated file raises various arrow errors)
            return None, f"unreadable ({type(err).__name__}: {err})"
        if meta.get("fingerprint") != self.fingerprint:
            return None, "written for another model or other settings"
        if meta.get("example_ids") != list(example_ids) or sorted(set(df["example_id"])) != sorted(example_ids):
            return None, "holds other examples than expected"
        if len(df) != meta.get("n_rows"):
            return None, f"holds {len(df)} rows, its metadata says {meta.get('n_rows')}"
        return df, None

    def load(self, k: int, example_ids: list[int]) -> pd.DataFrame | None:
        """The shard's rows if it can be used, else None (with a warning saying why, unless it is
        simply not written yet); counts resumed and redone shards."""
        df, why = self.read(k, example_ids)
        if df is None:
            if why != "missing":
                log.warning("shard %s %s: redoing it", self.path(k), why)
                self.redone += 1
            return None
        self.resumed += 1
        log.info("shard %s: resumed (%d rows)", self.path(k).name, len(df))
        return df

    def save(self, k: int, df: pd.DataFrame, example_ids: list[int]) -> None:
        """Write a shard atomically (temporary file, then rename)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pandas(df, preserve_index=False)
        meta = {"fingerprint": self.fingerprint, "example_ids": list(map(int, example_ids)), "n_rows": len(df)}
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), META_KEY: json.dumps(meta).encode()})
        tmp = self.path(k).with_suffix(".parquet.tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, self.path(k))

    def merge(self, frames: list[pd.DataFrame], sort_by: str | list[str] | None = None) -> pd.DataFrame:
        """Concatenate the shards (sorted by ``sort_by``, stably) into the output file and remove the
        shard folder."""
        df = pd.concat(frames, ignore_index=True)
        if sort_by:
            df = df.sort_values(sort_by, kind="stable", ignore_index=True)

        write_parquet(df, self.out)  # atomic; the job writes the full sidecar once it knows everything
        shutil.rmtree(self.dir, ignore_errors=True)
        return df


def group_shards(batches: list[slice], shard_size: int) -> list[tuple[slice, list[slice]]]:
    """Consecutive batches grouped into shards of at least ``shard_size`` items (whole batches, so the
    per-batch seeds, hence the samples, do not depend on the sharding): (shard slice, its batches)."""
    out, cur = [], []
    for b in batches:
        cur.append(b)
        if cur[-1].stop - cur[0].start >= shard_size:
            out.append((slice(cur[0].start, cur[-1].stop), cur))
            cur = []
    if cur:
        out.append((slice(cur[0].start, cur[-1].stop), cur))
    return out
