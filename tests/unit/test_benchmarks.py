"""The benchmarks run at a tiny size and their kernels agree with the references (no timing asserted)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "benchmarks" / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_benchmarks_run_tiny_and_their_outputs_match(tmp_path):
    bench = _load()
    rows = bench.main(["--tiny", "--no-workflow", "--out", str(tmp_path / "b.json")])
    by = {(r["benchmark"], r["measure"]): r for r in rows}
    # same-pass and two-pass give the same entropies for the same tokens; two-pass reads each token twice
    assert by[("1 same-pass entropy", "max abs entropy difference (nats)")]["met"]
    assert by[("1 same-pass entropy", "forward tokens")]["ratio"] >= 1.9
    # both kernel variants equal float64
    assert by[("2 chunked kernel", "max abs error vs float64 (nats), full / chunked")]["ratio"] < 1e-5
    assert (tmp_path / "b.json").is_file()


def test_chunked_kernel_equals_full_materialisation_and_float64():
    import torch

    from entcal.metrics import projected_logloss_entropy

    g = torch.Generator().manual_seed(3)
    h, w = torch.randn(37, 8, generator=g, dtype=torch.float64), torch.randn(50, 8, generator=g, dtype=torch.float64)
    y = torch.randint(50, (37,), generator=g)
    full = projected_logloss_entropy(h, w, y, temperature=0.7, chunk=None)
    for chunk in (1, 5, 37, 100):
        got = projected_logloss_entropy(h, w, y, temperature=0.7, chunk=chunk)
        torch.testing.assert_close(got, full, atol=1e-12, rtol=0)
    logp = torch.log_softmax(h @ w.T / 0.7, -1)  # independent closed form
    torch.testing.assert_close(full[0], -logp[torch.arange(37), y], atol=1e-12, rtol=0)
    torch.testing.assert_close(full[1], -(logp.exp() * logp).sum(-1), atol=1e-12, rtol=0)
