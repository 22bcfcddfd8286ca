"""Progress lines of long jobs: at most one a minute, with the rate and the time left."""

import logging

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


def test_generation_reports_every_step_with_fractional_prompts(tiny_model_dir, caplog):
    from entcal.models import load_model

    model, tok = load_model(tiny_model_dir, "tiny", dtype="float32", device="cpu")
    seen = []
    prompts = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
    sample_with_entropy(model, tok, prompts, temperature=1.0, max_new_tokens=4, batch_size=2, seed=0, stop_at_eos=False,
                        on_step=lambda done, tokens: seen.append((done, tokens)))  # fmt: skip
    # two batches (2 and 1 prompts) of 4 steps: prompts done grow by the batch's share of the steps
    assert seen == [(0.5, 2), (1.0, 4), (1.5, 6), (2.0, 8), (2.25, 9), (2.5, 10), (2.75, 11), (3.0, 12)]
    with caplog.at_level(logging.INFO, logger="entcal.progress"):
        p = Progress("x", 3, interval=0)
        p.update(*seen[-1])
    assert "x: 3/3 prompts (100 %)" in caplog.text
