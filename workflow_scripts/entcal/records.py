"""What every result was made from, by content: one record per output, checked where it is read.

Every job of the workflow (through :func:`entcal.logs.setup_logging`, which every adapter calls) does two
things with records:

- **When it starts**, it checks each of its inputs that has a record: the input's content must be what its
  own job wrote (a table cut short, a weight file rewritten in place, a hub-cache blob changed under a hard
  link: :class:`RecordError`, naming the file and the fix), and the inputs must agree on what they were made
  from (a generations file made from one version of the model's weights and a scores file made from another
  meet at aggregation: :class:`RecordError`, naming both).
- **When it ends**, it writes for each output a record beside it, ``.{name}.entcal.json`` (a hidden file next
  to ``name``; for a folder output, next to the folder): the rule, the output's SHA-256 (a folder's is the
  hash of its files' paths and hashes) and the SHA-256 of every input (its path relative to the record, and
  absolute, so a moved results folder still finds its inputs).

Before any job runs, :func:`stale_outputs` reads every record of the run's folders and finds the outputs
that are not current: changed since their job wrote them, or made from an input whose content is no longer
the one recorded. The workflow then makes Snakemake rerun exactly those jobs and what follows them
(:func:`mark_stale`: the output's time set to 1 s and its rule's rerun flag to 2, so the flag is newer than that
output alone), and says which and why.

Hashing costs one read of a file. A record keeps, for every file it hashed, its size, modification and
change times and inode; a later reader whose ``stat`` finds the same four takes the recorded hash without
reading the file. (The change time cannot be set by a user: a file rewritten in place, even with its
modification time put back, is read again.) An input without a record (a corpus archive, a local model
folder) is read in full by each job that reads it.

This module imports nothing of the package (the lowest layer): :mod:`entcal.logs` calls it from every job.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

SUFFIX = ".entcal.json"
VERSION = 1
SKIP_NAMES = {".snakemake_timestamp"}  # Snakemake's own marker inside folder outputs


# The keys of a model, dataset or featurizer entry that decide the files a download or conversion puts in its
# folder. The folder is named by their hash, so two configurations that give one name different sources (another
# GGUF file, repository or revision) get two folders, and neither converts or downloads over the other's.
SOURCE_KEYS = ("repo_id", "revision", "gguf", "allow_patterns")


def source_key(spec: dict) -> str:
    """The first 10 hex digits of the SHA-256 of ``spec``'s source keys (:data:`SOURCE_KEYS`)."""
    sub = {k: spec[k] for k in SOURCE_KEYS if spec.get(k) is not None}
    return hashlib.sha256(json.dumps(sub, sort_keys=True, default=str).encode()).hexdigest()[:10]


class RecordError(RuntimeError):
    """An input is not what its record says, or two inputs were made from different versions of one file."""


def record_path(output: str | Path) -> Path:
    p = Path(output)
    return p.parent / f".{p.name}{SUFFIX}"


def output_of(record: str | Path) -> Path:
    r = Path(record)
    return r.parent / r.name[1 : -len(SUFFIX)]


def is_record(name: str) -> bool:
    return name.startswith(".") and name.endswith(SUFFIX)


def _stat_key(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            h.update(block)
    return h.hexdigest()


def _files(folder: Path) -> list[tuple[str, Path]]:
    """(relative path, path) of every file in ``folder``, sorted by relative path; links to files followed, links
    to folders not."""
    out = []
    for d, dirs, names in os.walk(folder):
        dirs.sort()
        for n in sorted(names):
            if n in SKIP_NAMES or is_record(n):
                continue
            p = Path(d) / n
            out.append((p.relative_to(folder).as_posix(), p))
    return sorted(out)


def _known(path: Path) -> dict:
    """The per-file hashes a record of ``path`` holds ({relative path or '': [size, mtime, ctime, inode, sha]})."""
    try:
        rec = json.loads(record_path(path).read_text())
        return rec["output"].get("files", {})
    except (OSError, ValueError, KeyError, AttributeError):
        return {}


_MEMO: dict[tuple, str] = {}  # (path, stat key) -> sha256, hashed by this process


def file_digest(path: Path, known: list | None = None) -> tuple[str, list]:
    """(SHA-256, [size, mtime, ctime, inode, sha]) of a file; ``known`` is a record's entry for it, taken
    when the file's stat is unchanged."""
    try:
        st = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise RecordError(
                f"{path} is a link to {os.readlink(path)}, which does not exist (a cleaned cache?)"
            ) from None
        raise
    key = _stat_key(st)
    if known and known[:4] == key:
        return known[4], known
    memo = (str(path), *key)
    if memo not in _MEMO:
        _MEMO[memo] = _hash_file(path)
    return _MEMO[memo], [*key, _MEMO[memo]]


def digest(path: str | Path, known: dict | None = None) -> tuple[str, dict]:
    """(SHA-256, per-file entries) of a file or a folder (the hash of its files' relative paths and hashes).
    ``known``: a record's per-file entries, used where the stat is unchanged (default: ``path``'s own record)."""
    path = Path(path)
    known = _known(path) if known is None else known
    if path.is_dir():
        h, files = hashlib.sha256(), {}
        for rel, p in _files(path):
            sha, files[rel] = file_digest(p, known.get(rel))
            h.update(f"{rel}\0{sha}\n".encode())
        return h.hexdigest(), files
    sha, entry = file_digest(path, known.get(""))
    return sha, {"": entry}


def _rel(path: Path, start: Path) -> str:
    return os.path.relpath(os.path.abspath(path), os.path.abspath(start))


def write_record(output: str | Path, rule: str, inputs: dict[str, str]) -> dict:
    """Write the record of ``output`` (made by ``rule`` from ``inputs``: {path: sha256}), atomically."""
    out = Path(output)
    sha, files = digest(out, known={})
    rp = record_path(out)
    rec = {
        "version": VERSION,
        "rule": rule,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "output": {"sha256": sha, "kind": "folder" if out.is_dir() else "file", "files": files},
        "inputs": [
            {"path": _rel(p, rp.parent), "abs": os.path.abspath(p), "sha256": s} for p, s in sorted(inputs.items())
        ],
    }
    tmp = rp.with_name(rp.name + ".tmp")
    tmp.write_text(json.dumps(rec, indent=1))
    os.replace(tmp, rp)
    return rec


def read_record(output: str | Path) -> dict | None:
    rp = record_path(output)
    try:
        return json.loads(rp.read_text())
    except FileNotFoundError:
        return None
    except ValueError as err:
        raise RecordError(
            f"{rp}: the record of {output} is not valid JSON ({err}): delete it and redo {output}"
        ) from err


def _resolve(entry: dict, record_dir: Path) -> Path | None:
    for p in (record_dir / entry["path"], Path(entry["abs"])):
        if os.path.lexists(p):
            return Path(os.path.abspath(p))
    return None


def redo(path) -> str:
    return f"redo it: delete it (rm -r {path}) and run snakemake again, or add `--forcerun {path}`"


def check_current(path: str | Path) -> dict | None:
    """Check that ``path`` holds what its job wrote; returns its record (None: it has none)."""
    rec = read_record(path)
    if rec is None:
        return None
    try:
        sha, _ = digest(path, known=rec["output"].get("files", {}))
    except (RecordError, FileNotFoundError) as err:
        raise RecordError(f"{path} cannot be read as its job wrote it ({err}); {redo(path)}") from None
    if sha != rec["output"]["sha256"]:
        raise RecordError(
            f"{path} is not what its job ({rec['rule']}) wrote: its content changed since "
            f"{rec['written']} (SHA-256 {sha[:12]}…, recorded {rec['output']['sha256'][:12]}…); "
            f"{redo(path)}"
        )
    return rec


def check_inputs(inputs) -> dict[str, str]:
    """At a job's start: every input with a record holds what its job wrote, and the inputs agree on what they
    were made from. Returns {input path: sha256} for the outputs' records."""
    shas: dict[str, str] = {}
    made_from: dict[str, tuple[str, str]] = {}  # upstream absolute path -> (sha256, the input that says so)
    for p in sorted({str(p) for p in inputs}):
        if "/provenance/rerun/" in f"/{p}":
            continue
        rec = check_current(p)
        if rec is None:
            shas[p] = digest(p)[0]
            continue
        shas[p] = rec["output"]["sha256"]
        for entry in rec["inputs"]:
            up = _resolve(entry, record_path(p).parent)
            key = str(up) if up else entry["abs"]
            seen = made_from.setdefault(key, (entry["sha256"], p))
            if seen[0] != entry["sha256"]:
                raise RecordError(
                    f"{p} and {seen[1]} were made from different versions of {key} "
                    f"(SHA-256 {entry['sha256'][:12]}… and "
                    f"{seen[0][:12]}…): one of them is stale. Run snakemake again (it redoes what was made from an "
                    f"older version), or {redo(p)}"
                )
    for p, s in shas.items():  # an input that is itself upstream of another input: the same version
        a = os.path.normpath(os.path.abspath(p))
        if a in made_from and made_from[a][0] != s:
            raise RecordError(
                f"{made_from[a][1]} was made from another version of {p} than the one there now: it is "
                f"stale. Run snakemake again, or {redo(made_from[a][1])}"
            )
    return shas


def records_under(folder: str | Path):
    """Every record under ``folder`` (recursively)."""
    for d, dirs, names in os.walk(folder):
        dirs[:] = [x for x in dirs if not x.endswith((".partial", ".shards"))]
        for n in names:
            if is_record(n):
                yield Path(d) / n


def _records(folders, outputs) -> set[Path]:
    """The records under ``folders`` and those of ``outputs``."""
    recs = {rp for f in folders if Path(f).is_dir() for rp in records_under(f)}
    return recs | {record_path(o) for o in outputs if record_path(o).is_file()}


def survey(
    folders=(), outputs=(), refresh: bool = True
) -> tuple[dict[Path, tuple[str, list[str]]], dict[Path, tuple[str, list[str]]]]:
    """``(damaged, stale)``, each {output: (rule, reasons)}, over every recorded output under ``folders`` and
    among ``outputs`` that exists: damaged, its content is not what its job wrote (cut short, edited, replaced,
    a file it links to gone); stale, an input's content is not the one recorded (inputs that no longer exist
    are left to Snakemake, which remakes them and what follows; an input that is itself damaged marks nothing
    until it is dealt with). Where an output is current but its files' stats moved (a copied folder),
    ``refresh`` rewrites the stats in its record (no rereading next time)."""
    recs = _records(folders, outputs)
    damaged: dict[Path, tuple[str, list[str]]] = {}
    changed: dict[Path, tuple[str, list[tuple[str, Path]]]] = {}
    now: dict[str, str | None] = {}  # absolute path -> current sha256 (None: unreadable)

    def current(p: Path) -> str | None:
        a = os.path.abspath(p)
        if a not in now:
            try:
                now[a] = digest(p)[0]
            except (RecordError, OSError):
                now[a] = None
        return now[a]

    for rp in sorted(recs):
        out = Path(os.path.abspath(output_of(rp)))
        if not os.path.lexists(out):
            continue
        try:
            rec = json.loads(rp.read_text())
            want = rec["output"]
        except (ValueError, KeyError) as err:
            damaged[out] = ("?", [f"its record {rp} cannot be read ({err})"])
            continue
        rule = rec.get("rule", "?")
        try:
            sha, files = digest(out, known=want.get("files", {}))
            now[os.path.abspath(out)] = sha
            if sha != want["sha256"]:
                damaged[out] = (rule, [f"its content changed since its job ({rule}) wrote it on {rec['written']}"])
            elif refresh and files != want.get("files"):
                rec["output"]["files"] = files
                tmp = rp.with_name(rp.name + ".tmp")
                tmp.write_text(json.dumps(rec, indent=1))
                os.replace(tmp, rp)
        except (RecordError, OSError) as err:
            now[os.path.abspath(out)] = None
            damaged[out] = (rule, [f"it cannot be read as its job ({rule}) wrote it: {err}"])
        ups = []
        for entry in rec.get("inputs", []):
            up = _resolve(entry, rp.parent)
            if up is not None and current(up) != entry["sha256"]:
                ups.append((f"made from {up}, whose content changed since", up))
        if ups:
            changed[out] = (rule, ups)
    stale = {}
    for out, (rule, ups) in changed.items():
        if out in damaged:
            continue
        reasons = [r for r, up in ups if Path(up) not in damaged and now.get(str(up)) is not None]
        if reasons:
            stale[out] = (rule, reasons)
    return damaged, stale


def from_the_future(folders=(), outputs=(), slack: float = 5.0) -> list[tuple[Path, float]]:
    """(output, its modification time) for every recorded output whose time is more than ``slack`` seconds
    ahead of this machine's clock: Snakemake would take it for clock skew, delete finished outputs and rerun
    the same jobs on every run."""
    recs = _records(folders, outputs)
    now, out = time.time() + slack, []
    for rp in sorted(recs):
        o = output_of(rp)
        try:
            t = os.stat(
                o / ".snakemake_timestamp" if o.is_dir() and (o / ".snakemake_timestamp").exists() else o
            ).st_mtime
        except FileNotFoundError:
            continue
        if t > now:
            out.append((o, t))
    return out


def mark_stale(output: str | Path, flag: str | Path | None, reasons=()) -> None:
    """Make Snakemake rerun the job of ``output``: its time (a folder's ``.snakemake_timestamp`` too) set to 1 s
    after the epoch (Snakemake takes a time of 0 for none), and its rule's rerun flag (an input of every job of the
    rule, kept at time 0) to at least 2, newer than this output alone. The flag's content gets a line naming the
    output and why: Snakemake takes an input whose checksum it recorded as unchanged, whatever its time."""
    out = Path(output)
    for p in (out / ".snakemake_timestamp", out):
        if p.exists():
            os.utime(p, (1, 1), follow_symlinks=False)
    if flag is not None:
        f = Path(flag)
        f.parent.mkdir(parents=True, exist_ok=True)
        old = f.read_text() if f.exists() else ""
        t = f.stat().st_mtime if f.exists() else 0
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')}: {out} is stale: {'; '.join(reasons) or 'see the log'}\n"
        f.write_text(old + line)
        os.utime(f, (max(t, 2), max(t, 2)))
