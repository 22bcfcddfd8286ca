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
