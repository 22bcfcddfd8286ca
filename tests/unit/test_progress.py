"""Progress lines of long jobs: at most one a minute, with the rate and the time left."""

import logging

import pytest
import torch

from entcal.generate import sample_with_entropy
from entcal.logs import Progress


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_lines_give_done_rate_and_time_left_at_the_interval():
    clock = Clock()
    p = Progress("generate m", 40, interval=60, clock=clock)
    clock.t = 30
    assert p.update(5, 500) is None  # too soon
    clock.t = 60
    assert p.update(10, 1000) == "generate m: 10/40 prompts (25 %), 16.7 tokens/s, elapsed 1:00, about 3:00 left"
    clock.t = 90
    assert p.update(20, 2000) is None
    clock.t = 3700
    assert p.update(30, 3000) == "generate m: 30/40 prompts (75 %), 0.8 tokens/s, elapsed 1:01:40, about 20:33 left"
    assert p.finish().startswith("generate m: 40/40 prompts (100 %)") and p.finish().endswith("about 0:00 left")
    assert len(p.lines) == 3  # finishing again repeats no line


def test_generation_reports_every_step_with_fractional_prompts(tiny_model_dir, caplog):
    from entcal.models import load_model

    model, tok = load_model(tiny_model_dir, "tiny", dtype="float32", device="cpu")
    seen = []
    prompts = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
    sample_with_entropy(
        model,
        tok,
        prompts,
        temperature=1.0,
        max_new_tokens=4,
        batch_size=2,
        seed=0,
        stop_at_eos=False,
        on_step=lambda done, tokens: seen.append((done, tokens)),
    )
    # two batches (2 and 1 prompts) of 4 steps: prompts done grow by the batch's share of the steps
    assert seen == [(0.5, 2), (1.0, 4), (1.5, 6), (2.0, 8), (2.25, 9), (2.5, 10), (2.75, 11), (3.0, 12)]
    with caplog.at_level(logging.INFO, logger="entcal.progress"):
        p = Progress("x", 3, interval=0)
        p.update(*seen[-1])
    assert "x: 3/3 prompts (100 %)" in caplog.text


def test_a_bar_on_a_terminal_plain_lines_in_logs_and_on_slurm(monkeypatch):
    from entcal.logs import progress_bar_wanted, progress_interval

    class Stream:
        def __init__(self, tty):
            self.tty = tty

        def isatty(self):
            return self.tty

    monkeypatch.delenv("ENTCAL_PROGRESS", raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert progress_bar_wanted(Stream(True)) and not progress_bar_wanted(Stream(False))
    monkeypatch.setenv("SLURM_JOB_ID", "17")  # a SLURM job's output is a file, even under srun --pty
    assert not progress_bar_wanted(Stream(True))
    monkeypatch.setenv("ENTCAL_PROGRESS", "bar")
    assert progress_bar_wanted(Stream(False))
    monkeypatch.setenv("ENTCAL_PROGRESS", "lines")
    assert not progress_bar_wanted(Stream(True))
    monkeypatch.setenv("ENTCAL_PROGRESS", "yes")
    with pytest.raises(ValueError, match="ENTCAL_PROGRESS='yes': use auto, bar or lines"):
        progress_bar_wanted(Stream(True))
    monkeypatch.setenv("ENTCAL_PROGRESS_INTERVAL", "15")
    assert progress_interval() == 15.0 and Progress("x", 1, bar=False).interval == 15.0
    monkeypatch.setenv("ENTCAL_PROGRESS_INTERVAL", "soon")
    with pytest.raises(ValueError, match="not a number of seconds"):
        progress_interval()


def test_the_bar_follows_the_lines(capsys):
    clock = Clock()
    p = Progress("score m", 8, unit="references", interval=60, clock=clock, bar=True)
    clock.t = 2
    p.update(3, 300)
    assert p.bar.n == 3 and p.lines == []  # the bar moves at once; the plain line waits for its interval
    p.update(2.5, 250)  # a fractional step back (a re-counted batch) moves the bar back too
    assert p.bar.n == 2.5
    p.finish()
    err = capsys.readouterr().err
    assert "score m" in err and "8/8" in err and p.bar is None
    assert p.lines[-1].startswith("score m: 8/8 references (100 %)")


def test_hidden_states_and_fit_windows_report_each_batch(tiny_model_dir):
    from entcal.labels import fit_data, last_hidden
    from entcal.models import load_model
    from entcal.predictor import FutureEntropyHead

    model, tok = load_model(tiny_model_dir, "tiny", dtype="float32", device="cpu")
    seqs = [[5, 6, 7], [8, 9], [10, 11, 12, 13], [14]]
    seen = []
    h = last_hidden(model, seqs, tok.pad_token_id, 3, on_batch=lambda d, t: seen.append((d, t)))
    assert seen == [(3, 9), (4, 10)]
    with torch.no_grad():  # the batched, padded states equal one sequence at a time
        for i, s in enumerate(seqs):
            torch.testing.assert_close(
                h[i], model.model(torch.tensor([s])).last_hidden_state[0, -1], atol=1e-5, rtol=1e-5
            )
    head = FutureEntropyHead(model.get_output_embeddings().weight.detach(), rank=2, hidden=4, mu=0.0, sigma=1.0)
    pairs = [([5, 6], [7, 8, 9]), ([10], [11, 12]), ([13, 14, 15], [16])]
    seen = []
    data = fit_data(model, pairs, 2, head, False, 2, tok.pad_token_id, on_batch=lambda d, t: seen.append((d, t)))
    assert seen == [(2, 8), (3, 12)] and len(data["target"]) == 3 + 2 + 1


def test_a_job_that_stops_early_ends_at_100_percent_and_says_where_it_stopped():
    clock = Clock()
    p = Progress("head training", 1500, unit="steps", rate_unit="labels", clock=clock, bar=False)
    clock.t = 3
    p.update(300, 300 * 256)
    assert p.finish(300) == (
        "head training (stopped at 300 of 1500 steps): 300/300 steps (100 %), 25600.0 labels/s, "
        "elapsed 0:03, about 0:00 left"
    )


def test_without_tqdm_a_wanted_bar_becomes_plain_lines_and_says_so(monkeypatch, caplog):
    import sys

    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # import tqdm.auto raises ImportError
    with caplog.at_level(logging.INFO, logger="entcal.progress"):
        p = Progress("aggregate", 2, bar=True, interval=0)
        p.update(2, 10)
    assert p.bar is None and "no progress bar (tqdm is not installed here)" in caplog.text
    assert "aggregate: 2/2 prompts (100 %)" in caplog.text
