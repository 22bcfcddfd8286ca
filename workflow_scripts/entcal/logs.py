"""Route logging, warnings and uncaught exceptions of a rule job into its log file."""

from __future__ import annotations

import logging
import sys
import warnings

from entcal import records


def setup_logging(logfile: str | None = None, level: int = logging.INFO, outputs=None, job=None) -> None:
    """Log to ``logfile`` (the rule's ``log:``) and stderr; capture warnings and tracebacks.

    Under SLURM the executor removes job logs of successful jobs, so the rule log is the only
    lasting record of a job: everything, including an uncaught exception, goes there. A crash in
    native code (a segmentation fault in a library) leaves its Python traceback there too.

    ``outputs`` (the rule's ``snakemake.output``): at a normal exit the job logs what it wrote, and a job
    about to exit 0 without one of its outputs fails instead (exit 1), naming the missing files, so that
    no job can "complete successfully" without its outputs and with an empty log.

    ``job`` (the adapter's ``snakemake`` object; its outputs stand for ``outputs``): the job's inputs are checked
    against their records before it starts, and at a normal exit each output gets its record of what it was
    made from (:mod:`entcal.records`).

    Snakemake deletes a rule's log before each attempt, so a retry (``retries`` in the SLURM profile) would
    erase the reason the attempt before it failed. Each attempt therefore also writes its log to
    ``{log}.attempts/attempt-<k>.log`` (k counts the attempts kept there, from 1); a successful attempt removes
    its copy, and one that failed, was killed, cancelled or timed out leaves it.
    """
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    attempt = None
    if logfile:
        handlers.append(logging.FileHandler(logfile, mode="w"))
        attempt = _attempt_log(logfile)
        handlers.append(logging.FileHandler(attempt, mode="w"))
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    logging.captureWarnings(True)
    warnings.simplefilter("default")

    failed = []

    def _excepthook(exc_type, exc, tb):
        failed.append(exc_type)
        logging.getLogger("entcal").critical("uncaught exception", exc_info=(exc_type, exc, tb))

    sys.excepthook = _excepthook
    if attempt is not None:
        import os
        import socket

        logging.getLogger("entcal.job").info(
            "%s of this job (host %s, pid %d, python %s%s); kept there if it does not succeed",
            attempt,
            socket.gethostname(),
            os.getpid(),
            sys.executable,
            f", SLURM job {os.environ['SLURM_JOB_ID']}" if os.environ.get("SLURM_JOB_ID") else "",
        )
    if logfile:
        import faulthandler

        global _FAULT_FILE
        _FAULT_FILE = open(logfile, "a")  # noqa: SIM115 (open for the process's lifetime)
        faulthandler.enable(file=_FAULT_FILE)
    made_from = None
    if job is not None and (why := foreign_package(getattr(job, "scriptdir", None))):
        logging.getLogger("entcal.job").critical("%s", why)
        logging.shutdown()
        sys.exit(1)
    if job is not None:
        outputs = job.output
        try:
            made_from = records.check_inputs(list(job.input))
        except records.RecordError as err:
            logging.getLogger("entcal.job").critical("%s", err)
            logging.shutdown()
            sys.exit(1)
    if outputs is not None:
        import atexit
        import time

        t0, paths = time.monotonic(), [str(p) for p in outputs]
        atexit.register(_check_outputs, paths, t0, failed, None if job is None else (job.rule, made_from), attempt)
    try:  # progress bars would flood the rule logs
        from huggingface_hub.utils import disable_progress_bars
        from transformers.utils import logging as hf_logging

        disable_progress_bars()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


_FAULT_FILE = None


def foreign_package(scriptdir) -> str | None:
    """Why this job must not run, where the ``entcal`` it imported is not the workflow's own (the package beside the
    rule's script, ``scriptdir``): an installed copy of another checkout or version comes first on sys.path
    (Snakemake appends the script's folder); None where it is the workflow's own or ``scriptdir`` is unknown."""
    import os

    if not scriptdir or not os.path.isdir(os.path.join(scriptdir, "entcal")):
        return None
    mine = os.path.realpath(os.path.join(scriptdir, "entcal"))
    used = os.path.realpath(os.path.dirname(__file__))  # this module is part of the package the job imported
    if mine == used:
        return None
    return (
        f"this job imported entcal from {used}, but the workflow's own package is {mine}: the environment has "
        f"another copy installed, which would run code the workflow's fingerprints do not describe. Install the "
        f"workflow's own (pip install --no-deps -e {os.path.dirname(scriptdir)}) or uninstall the other "
        f"(pip uninstall entcal)"
    )


def _attempt_log(logfile: str):
    from pathlib import Path

    folder = Path(f"{logfile}.attempts")
    folder.mkdir(parents=True, exist_ok=True)
    k = 1 + max(
        (int(p.stem.split("-")[1]) for p in folder.glob("attempt-*.log") if p.stem.split("-")[1].isdigit()), default=0
    )
    return folder / f"attempt-{k}.log"


def _check_outputs(paths: list[str], t0: float, failed: list, made=None, attempt=None) -> None:
    """atexit: log what the job wrote; exit 1 if it ends normally without all of its outputs; record each
    output (``made``: (rule, {input: sha256}))."""
    import os
    import time
    from pathlib import Path

    if failed:  # an uncaught exception: Python exits 1 and the log holds the traceback
        return
    log = logging.getLogger("entcal.job")
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        log.critical(
            "the job is ending without writing %d of its %d outputs, and no exception was raised: %s. "
            "It fails here rather than pass as done; rerun it, and report this with its log.",
            len(missing),
            len(paths),
            ", ".join(missing),
        )
        logging.shutdown()
        os._exit(1)
    size = sum(
        f.stat().st_size for p in map(Path, paths) for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file()
    )
    if made is not None:
        t1 = time.monotonic()
        for p in paths:
            records.write_record(p, made[0], made[1])
        log.info(
            "recorded what %d outputs were made from (%d inputs by SHA-256) in %.2f s",
            len(paths),
            len(made[1]),
            time.monotonic() - t1,
        )
    log.info("done: %d outputs, %.1f MB, %s", len(paths), size / 1e6, _clock(time.monotonic() - t0))
    if attempt is not None:  # succeeded: the rule log is its record; earlier failed attempts stay
        for h in logging.getLogger().handlers:
            if isinstance(h, logging.FileHandler) and Path(h.baseFilename) == Path(attempt).resolve():
                logging.getLogger().removeHandler(h)
                h.close()
        Path(attempt).unlink(missing_ok=True)
        try:
            Path(attempt).parent.rmdir()  # only if empty
        except OSError:
            pass


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


PROGRESS_ENV = "ENTCAL_PROGRESS"  # auto (default) | bar | lines
INTERVAL_ENV = "ENTCAL_PROGRESS_INTERVAL"  # seconds between plain progress lines (default 60)


def progress_bar_wanted(stream=None) -> bool:
    """A progress bar on an interactive terminal, plain lines elsewhere (a rule's log, a SLURM job's
    output, a pipe). ``ENTCAL_PROGRESS=bar`` or ``lines`` overrides the choice."""
    import os

    mode = os.environ.get(PROGRESS_ENV, "auto")
    if mode not in ("auto", "bar", "lines"):
        raise ValueError(f"{PROGRESS_ENV}={mode!r}: use auto, bar or lines")
    if mode != "auto":
        return mode == "bar"
    stream = stream if stream is not None else sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)()) and "SLURM_JOB_ID" not in os.environ


def progress_problems() -> list[str]:
    """The progress settings of the environment that a job would refuse, checked once when the workflow loads
    (before any job starts), so that a typo does not fail every job."""
    out = []
    for check in (progress_bar_wanted, progress_interval):
        try:
            check()
        except ValueError as err:
            out.append(f"{err} (an environment variable; docs/reliability.md, Progress of long jobs)")
    return out


def progress_interval(default: float = 60.0) -> float:
    import os

    raw = os.environ.get(INTERVAL_ENV)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{INTERVAL_ENV}={raw!r} is not a number of seconds") from None
    if value < 0:
        raise ValueError(f"{INTERVAL_ENV}={raw!r}: the interval cannot be negative")
    return value


class Progress:
    """Progress of a long job: plain lines at most one every ``interval`` seconds (and one at the end),
    ``{what}: {done}/{total} {unit} (p %), {rate} {rate_unit}/s, elapsed m:ss, about m:ss left``,
    into the job's log; on an interactive terminal also a tqdm bar (:func:`progress_bar_wanted`).

    ``update(done, count)``: ``done`` work units of ``total`` finished (fractions allowed: a batch half
    generated is half done) and ``count`` items of the rate (tokens) so far. The time left assumes the
    remaining units cost what the finished ones did. ``interval`` defaults to ``ENTCAL_PROGRESS_INTERVAL``
    or 60 s. Plain log lines read the same in a rule's log, on a terminal and in a SLURM job's output.
    """

    def __init__(
        self,
        what: str,
        total: float,
        unit: str = "prompts",
        rate_unit: str = "tokens",
        interval: float | None = None,
        logger: logging.Logger | None = None,
        clock=None,
        bar: bool | None = None,
    ):
        import time

        self.what, self.total, self.unit, self.rate_unit = what, float(total), unit, rate_unit
        self.interval = progress_interval() if interval is None else interval
        self.log = logger or logging.getLogger("entcal.progress")
        self.clock = clock or time.monotonic
        self.t0 = self.last = self.clock()
        self.done, self.count, self.lines = 0.0, 0, []
        self.bar = None
        if bar if bar is not None else progress_bar_wanted():
            try:  # tqdm comes with transformers; the analysis environment has no need of it
                from tqdm.auto import tqdm
            except ImportError:
                self.log.info("%s: no progress bar (tqdm is not installed here), plain lines only", what)
            else:
                total_bar = int(self.total) if self.total.is_integer() else self.total
                self.bar = tqdm(total=total_bar, desc=what, unit=unit, dynamic_ncols=True, leave=True)

    def update(self, done: float, count: int | None = None, force: bool = False) -> str | None:
        if self.bar is not None:
            self.bar.update(float(done) - self.bar.n)
            if float(self.bar.n).is_integer():  # "8/8", not "8.0/8"
                self.bar.n = int(self.bar.n)
            self.bar.set_postfix_str(
                f"{self.count / max(self.clock() - self.t0, 1e-9):.1f} {self.rate_unit}/s", refresh=False
            )
        self.done = float(done)
        if count is not None:
            self.count = count
        now = self.clock()
        if not force and now - self.last < self.interval:
            return None
        self.last = now
        line = self.line(now)
        self.lines.append(line)
        self.log.info("%s", line)
        return line

    def line(self, now: float) -> str:
        el = max(now - self.t0, 1e-9)
        frac = self.done / self.total if self.total else 1.0
        left = el * (1 - frac) / frac if frac > 0 else float("nan")
        done = f"{self.done:.0f}" if abs(self.done - round(self.done)) < 1e-9 else f"{self.done:.1f}"
        return (
            f"{self.what}: {done}/{self.total:.0f} {self.unit} ({100 * frac:.0f} %), {self.count / el:.1f} "
            f"{self.rate_unit}/s, elapsed {_clock(el)}, "
            f"{'about ' + _clock(left) + ' left' if left == left else 'time left unknown'}"
        )

    def finish(self, done: float | None = None) -> str:
        """The last line; ``done``: where the job stopped, if before ``total`` (early stopping): the line then
        counts to ``done`` and says where it stopped, so the time left reads 0."""
        if done is not None and done < self.total:
            self.what = f"{self.what} (stopped at {done:g} of {self.total:g} {self.unit})"
            self.total = float(done)
            if self.bar is not None:
                self.bar.total = int(done) if float(done).is_integer() else float(done)
        if self.lines and self.done == self.total and self.lines[-1] == self.line(self.last):
            line = self.lines[-1]  # the last line already said 100 %
        else:
            line = self.update(self.total, force=True)
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        return line
