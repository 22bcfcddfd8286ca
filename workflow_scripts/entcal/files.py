"""The intermediate tables: Parquet files with a JSON sidecar, written whole and read only when whole.

Every intermediate Parquet file of the workflow (``data/*``, ``prompts/*``, ``generations/*``,
``scores/*``, ``calibration/*/labels``) has a sidecar of the same stem (``.json``) that records, next to
the settings that produced it, ``rows`` (its row count), ``bytes`` (its size) and ``sha256`` (of its bytes);
generation and score sidecars add their provenance: ``dataset`` and ``upstream`` (``{"prompts": SHA-256 of the
prompts file they were made from}``). Files are written to a temporary name and renamed, so a killed job never
leaves a half-written file under the real name.

A reader (:func:`read_parquet`, :func:`check_file`) compares the file with its sidecar and with what
the configuration expects (model, sampler setting, prompt count) and stops with an
:class:`IntermediateFileError` that names the file, says what is wrong and how to redo it. The
workflow runs the same checks on every existing intermediate file before any job starts
(:func:`check_existing`), so a damaged file stops the run before Snakemake deletes the outputs it would
have recomputed from it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from entcal.records import file_digest

SELECTION_KEY = b"entcal_selection"  # Parquet metadata of examples.parquet: how the examples were chosen


class IntermediateFileError(RuntimeError):
    """An intermediate file is missing, unreadable, cut short or not what the configuration expects."""


def sidecar_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def redo_hint(path: str | Path) -> str:
    return (
        f"Redo it: delete it (rm {path}) and run snakemake again, or add `--forcerun {path}` to your "
        "snakemake command (that job and everything computed from it run again)."
    )


def _fail(path, what: str) -> IntermediateFileError:
    return IntermediateFileError(f"{path}: {what}. {redo_hint(path)}")


def replace_atomically(path: str | Path, write) -> None:
    """``write(temporary path)``, then rename it to ``path``: a killed writer never leaves a part of a table
    under the real name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def write_parquet(df: pd.DataFrame, path: str | Path, sidecar: dict | None = None) -> dict:
    """Write ``df`` atomically and its sidecar (``sidecar`` plus ``rows`` and ``bytes``); returns the sidecar."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return write_sidecar(path, sidecar or {})


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex): :func:`entcal.records.file_digest`, remembered per process by the file's
    size, times and inode, so the job's record check and this sidecar check read a file once between them."""
    return file_digest(Path(path))[0]


def write_sidecar(path: str | Path, sidecar: dict) -> dict:
    """The sidecar of an already written file: ``sidecar`` plus the file's ``rows``, ``bytes`` and ``sha256``
    (what every reader checks the file against)."""
    import pyarrow.parquet as pq

    side = {
        **sidecar,
        "rows": pq.read_metadata(path).num_rows,
        "bytes": Path(path).stat().st_size,
        "sha256": file_sha256(path),
    }
    tmp = sidecar_path(path).with_name(sidecar_path(path).name + ".tmp")
    tmp.write_text(json.dumps(side, indent=2))
    os.replace(tmp, sidecar_path(path))
    return side


def read_sidecar(path: str | Path) -> dict:
    side = sidecar_path(path)
    if not side.is_file():
        raise _fail(path, f"its sidecar {side} is missing (written by an older version, or deleted)")
    try:
        return json.loads(side.read_text())
    except ValueError as err:
        raise _fail(path, f"its sidecar {side} is not valid JSON ({err})") from err


def check_file(path: str | Path, expect: dict | None = None, verify_hash: bool = True) -> dict:
    """Check a Parquet file against its sidecar (size, rows, SHA-256 of its bytes) and ``expect`` ({sidecar
    key: value}); returns the sidecar. The hash is computed once per process and file version (size and
    mtime); sidecars of versions before the hash have none, and are checked without it. ``verify_hash=False``
    (the start-up check of every file, :func:`check_existing`) reads only the footer: each job that reads a
    file hashes it, which costs one more read of what it reads anyway."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise IntermediateFileError(f"{path}: missing. Run snakemake again to write it.")
    side = read_sidecar(path)
    size = path.stat().st_size
    if "bytes" in side and side["bytes"] != size:
        raise _fail(path, f"is {size} bytes, its sidecar says {side['bytes']}: the file was cut short or replaced")
    if verify_hash and "sha256" in side and file_sha256(path) != side["sha256"]:
        raise _fail(
            path,
            f"its content is not what its job wrote (SHA-256 {file_sha256(path)[:12]}…, its sidecar says "
            f"{side['sha256'][:12]}…): the file was damaged or replaced",
        )
    try:
        rows = pq.read_metadata(path).num_rows
    except Exception as err:  # noqa: BLE001 - arrow raises several types for a damaged file
        raise _fail(path, f"is not a readable Parquet file ({type(err).__name__}: {err})") from err
    if "rows" in side and side["rows"] != rows:
        raise _fail(path, f"holds {rows} rows, its sidecar says {side['rows']}")
    for key, want in (expect or {}).items():
        if side.get(key) != want:
            raise _fail(path, f"was written for {key} = {side.get(key)!r}, the configuration asks for {want!r}")
    return side


def read_parquet(path: str | Path, expect: dict | None = None, columns: list[str] | None = None) -> pd.DataFrame:
    """:func:`check_file`, then the rows (a damaged file is an :class:`IntermediateFileError` too)."""
    check_file(path, expect)
    try:
        return pd.read_parquet(path, columns=columns)
    except Exception as err:  # noqa: BLE001
        raise _fail(path, f"cannot be read ({type(err).__name__}: {err})") from err


def check_existing(paths, skip=()) -> list[str]:
    """The problems of every existing file among ``paths`` (missing ones are fine: they will be
    written), except those in ``skip`` (outputs this run writes anew). One line per bad file."""
    skip = {str(Path(p)) for p in skip}
    bad = []
    for p in paths:
        if Path(p).is_file() and str(Path(p)) not in skip:
            try:
                check_file(p, verify_hash=False)  # cheap at start-up; the jobs that read a file hash it
            except IntermediateFileError as err:
                bad.append(str(err))
    return bad


# --------------------------------------------------------------------------------------------------
# One run per results folder

LOCK_NAME = ".entcal.lock"
_HELD: dict[str, int] = {}  # results folder -> open file descriptor holding its lock, for the process' life


class ResultsLockedError(RuntimeError):
    """Another Snakemake process (perhaps from another checkout) is running on the same results folder."""


def lock_results_dir(results_dir: str | Path, owner: str = "") -> Path:
    """Hold an exclusive ``flock`` on ``{results_dir}/.entcal.lock`` until this process exits.

    Snakemake's own lock lives in the checkout's ``.snakemake/``, so two checkouts (or two working
    directories) pointed at one ``results_dir`` would run the same jobs at once and overwrite each other's
    files. The kernel releases the lock when the holder exits, however it exits: a killed run leaves no
    stale lock. The file records who holds it (pid, host, checkout, start time) for the message of the
    process that finds it held. Taken again by the same process it is a no-op.
    """
    import fcntl
    import socket
    import time

    folder = Path(results_dir).resolve()
    if str(folder) in _HELD:
        return folder / LOCK_NAME
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    if path.is_symlink() or (path.exists() and not path.is_file()):
        what = "a symbolic link" if path.is_symlink() else "not a regular file"
        raise ResultsLockedError(
            f"{path} is {what}: the run's lock must be a plain file it writes itself (a link "
            "would have its target truncated). Remove it (rm -r) and start the run again."
        )
    # O_NOFOLLOW: a link put there after the check above is refused by the kernel, never followed
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as err:
        raise ResultsLockedError(
            f"{path}: cannot open the run's lock ({err.strerror}): remove it and start again"
        ) from err
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise ResultsLockedError(
            f"{folder} is in use by another run ({holder}). Two runs on one results folder would compute the same "
            "jobs at once and overwrite each other's files: wait for that run to end (or stop it), or give this "
            "one another results_dir (--config results_dir=...). Its lock is released when that process exits."
        ) from None
    info = (
        f"pid {os.getpid()} on {socket.gethostname()}, checkout {owner or os.getcwd()}, "
        f"since {time.strftime('%Y-%m-%d %H:%M:%S')}"
    )
    os.ftruncate(fd, 0)
    os.pwrite(fd, info.encode() + b"\n", 0)
    _HELD[str(folder)] = fd
    return path
