"""Route logging, warnings and uncaught exceptions of a rule job into its log file."""

from __future__ import annotations

import logging
import sys
import warnings


def setup_logging(logfile: str | None = None, level: int = logging.INFO) -> None:
    """Log to ``logfile`` (the rule's ``log:``) and stderr; capture warnings and tracebacks.

    Under SLURM the executor removes job logs of successful jobs, so the rule log is the only
    lasting record of a job: everything, including an uncaught exception, goes there.
    """
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if logfile:
        handlers.append(logging.FileHandler(logfile, mode="w"))
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    logging.captureWarnings(True)
    warnings.simplefilter("default")

    def _excepthook(exc_type, exc, tb):
        logging.getLogger("entcal").critical("uncaught exception", exc_info=(exc_type, exc, tb))

    sys.excepthook = _excepthook
    try:  # progress bars would flood the rule logs
        from huggingface_hub.utils import disable_progress_bars
        from transformers.utils import logging as hf_logging

        disable_progress_bars()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    """Progress lines of a long job, at most one every ``interval`` seconds (and one at the end):
    ``{what}: {done}/{total} {unit} (p %), {rate} {rate_unit}/s, elapsed m:ss, about m:ss left``.

    ``update(done, count)``: ``done`` work units of ``total`` finished (fractions allowed: a batch half
    generated is half done) and ``count`` items of the rate (tokens) so far. The time left assumes the
    remaining units cost what the finished ones did. Plain log lines, so they read the same in a rule's
    log, on a terminal and in a SLURM job's output.
    """

    def __init__(self, what: str, total: float, unit: str = "prompts", rate_unit: str = "tokens", interval: float = 60.0,
                 logger: logging.Logger | None = None, clock=None):  # fmt: skip
        import time

        self.what, self.total, self.unit, self.rate_unit, self.interval = what, float(total), unit, rate_unit, interval
        self.log = logger or logging.getLogger("entcal.progress")
        self.clock = clock or time.monotonic
        self.t0 = self.last = self.clock()
        self.done, self.count, self.lines = 0.0, 0, []

    def update(self, done: float, count: int | None = None, force: bool = False) -> str | None:
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
        return (f"{self.what}: {done}/{self.total:.0f} {self.unit} ({100 * frac:.0f} %), {self.count / el:.1f} "
                f"{self.rate_unit}/s, elapsed {_clock(el)}, "
                f"{'about ' + _clock(left) + ' left' if left == left else 'time left unknown'}")  # fmt: skip

    def finish(self) -> str:
        return self.update(self.total, force=True)
