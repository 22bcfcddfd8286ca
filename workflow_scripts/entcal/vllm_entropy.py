"""The entropy of every step, recorded inside vLLM's sampler (vLLM 0.32's logits-processor interface).

:class:`VllmEntropyRecorder` is a vLLM ``LogitsProcessor`` that changes nothing: on each step it takes
the rows of the batch whose request carries ``SamplingParams.extra_args["entcal_entropy"]`` (a key, the
setting and a folder), applies the setting's transformers warpers (:func:`entcal.sampling.sampling_processors`,
the same code as the HF backend and the scoring pass) to a copy of the float32 logits vLLM samples from, and
appends (key, step, entropy) to ``{folder}/entropy-{pid}.bin``, one write per step. The step is the number of
tokens the request has produced so far, so a row sampled during a chunked prefill (whose token vLLM
discards) is overwritten by the real first step; :func:`entcal.vllm_backend.read_records` keeps the last
record of each (key, step). Only the first tensor-parallel rank writes.

It runs where vLLM's sampler runs (the engine's worker process, or this process with
``VLLM_ENABLE_V1_MULTIPROCESSING=0``): hence a file, not a Python object, carries the values back. The file
holds records of :data:`RECORD` (little-endian int64 key, int32 step, float64 entropy in nats).

Only imported where vLLM is installed (:mod:`entcal.vllm_backend` names the class by its qualified name).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

from entcal.metrics import logz_entropy
from entcal.samplers import sampler as registry_entry
from entcal.sampling import sampling_processors
from entcal.vllm_backend import EXTRA_KEY, RECORD


def _first_rank() -> bool:
    """Whether this worker is the first tensor-parallel rank (every rank samples the same tokens)."""
    try:
        from vllm.distributed.parallel_state import get_tensor_model_parallel_rank

        return get_tensor_model_parallel_rank() == 0
    except (AssertionError, ImportError, RuntimeError):  # no model-parallel group: one process
        return True


class VllmEntropyRecorder(LogitsProcessor):
    """Records the full-vocabulary entropy of the distribution each request samples from; logits unchanged."""

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        self.slots: dict[int, tuple[int, tuple, str, list[int]]] = {}  # batch row -> (key, setting, dir, output ids)
        self.writes = _first_rank()

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        spec = (sampling_params.extra_args or {}).get(EXTRA_KEY)
        if spec is not None and not {"key", "dir", "sampler", "temperature"} <= set(spec):
            raise ValueError(f"extra_args[{EXTRA_KEY!r}] needs key, dir, sampler and temperature, got {sorted(spec)}")

    def is_argmax_invariant(self) -> bool:
        return False  # applied to every request, greedy ones too (it changes nothing)

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is None:
            return
        for i in batch_update.removed:
            self.slots.pop(i, None)
        for i, params, _, out in batch_update.added:
            spec = (params.extra_args or {}).get(EXTRA_KEY)
            if spec is None:
                self.slots.pop(i, None)
                continue
            setting = (spec["sampler"], float(spec["temperature"]), spec.get("param"))
            self.slots[i] = (int(spec["key"]), setting, str(spec["dir"]), out)
        for a, b, direction in batch_update.moved:
            sa, sb = self.slots.pop(a, None), self.slots.pop(b, None)
            if sa is not None:
                self.slots[b] = sa
            if direction == MoveDirectionality.SWAP and sb is not None:
                self.slots[a] = sb

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.slots or not self.writes:
            return logits
        groups: dict[tuple, list[int]] = {}
        for i, (_, setting, folder, _) in self.slots.items():
            if i < logits.shape[0]:
                groups.setdefault((setting, folder), []).append(i)
        for (setting, folder), rows in groups.items():
            rows.sort()
            # the whole batch as it is (no copy), or its rows; nothing below writes into vLLM's logits
            x = logits if rows == list(range(logits.shape[0])) else logits[rows]
            sampler, temperature, param = setting
            if registry_entry(sampler).warper is None:  # temperature only: one blocked pass, no tempered copy
                ent = logz_entropy(x.float(), temperature)[1]
            else:
                scores = x.float()
                for proc in sampling_processors(*setting):
                    scores = proc(None, scores)  # the warpers return new tensors and read the scores only
                ent = logz_entropy(scores)[1]
            ent = ent.cpu().numpy()
            rec = np.empty(len(rows), RECORD)
            rec["key"] = [self.slots[i][0] for i in rows]
            rec["step"] = [len(self.slots[i][3]) for i in rows]
            rec["entropy"] = ent
            with open(Path(folder) / f"entropy-{os.getpid()}.bin", "ab") as f:
                f.write(rec.tobytes())
        return logits
