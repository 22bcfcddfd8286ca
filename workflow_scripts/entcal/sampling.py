"""Samplers as logits processors: how each sampler of the registry (:mod:`entcal.samplers`) is built
for ``model.generate``, and how the calibrated ones run teacher-forced along a human reference.

- :func:`sampling_processors`: the transformers warpers of a setting (temperature, then the
  truncation the registry names);
- :class:`EntropyRecorder`: placed last, records the entropy of the distribution each token is drawn
  from and the drawn token's log-probability, in the sampling pass itself;
- calibrated samplers (:func:`calibrated_processors`): :class:`FutureEntropyTilt` with the trained
  head (:class:`HeadPredictor`) or the exact lookahead (:class:`LookaheadPredictor`), and
  :class:`Mirostat`;
- :func:`reference_adjuster`: the same samplers along a human reference, for scoring.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import LogitsProcessor, TemperatureLogitsWarper

from entcal.lookahead import candidate_entropies
from entcal.metrics import logz_entropy, upcast
from entcal.predictor import FutureEntropyHead
from entcal.samplers import sampler as registry_entry
from entcal.tilt import step_bucket, tilt_logprobs


class TopPThreshold(LogitsProcessor):
    """Top-p (nucleus) truncation without sorting the vocabulary: the most probable tokens up to and including
    the first at which the descending cumulative mass reaches ``top_p``, and every token tied with that one;
    the rest get ``filter_value``.

    The mass is exact: float64 probabilities exp(x - log Z) of the candidates, log Z a float64 log-sum-exp of
    the row (a float32 softmax over 262k entries is off by about 1e-5 in total mass, enough to move the
    boundary by a token or two). The candidates come from a top-k over the logits that grows (256, then 8
    times as many) until their mass reaches ``top_p``, so a 262k vocabulary is sorted only as far as the
    nucleus reaches; tokens are then kept by comparing logits with the boundary token's. :func:`top_p_reference`
    computes the same set after a full sort. Against transformers' ``TopPLogitsWarper`` the kept set is the
    same but where tokens tie at the boundary (it keeps whichever of them its sort puts last) and where its
    float32 softmax and cumulative sum move the boundary (a token or two of a 262k row, about 1e-5 of mass).
    """

    def __init__(
        self, top_p: float, filter_value: float = -float("inf"), min_tokens_to_keep: int = 1, start: int = 256
    ):
        if not 0 < float(top_p) <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        self.top_p, self.filter_value = float(top_p), filter_value
        self.min_tokens_to_keep, self.start = max(1, int(min_tokens_to_keep)), int(start)

    def boundary(self, x: torch.Tensor) -> torch.Tensor:
        """(rows, 1) logit of each row's boundary token, for (rows, V) logits."""
        v = x.shape[-1]
        logz = log_z64(x)
        out = torch.empty(x.shape[0], 1, dtype=x.dtype, device=x.device)
        todo = torch.arange(x.shape[0], device=x.device)
        k = min(max(self.start, self.min_tokens_to_keep), v)
        while len(todo):
            vals = x[todo].topk(k, dim=-1).values  # descending
            cum = torch.exp(vals.double() - logz[todo, None]).cumsum(-1)
            done = (cum[:, -1] >= self.top_p) | (k >= v)
            if done.any():
                first = (cum[done] < self.top_p).sum(-1, keepdim=True)  # index of the first mass >= top_p
                first = first.clamp(min=self.min_tokens_to_keep - 1, max=k - 1)
                out[todo[done]] = vals[done].gather(-1, first)
            todo, k = todo[~done], min(k * 8, v)
        return out

    def __call__(self, input_ids, scores: torch.Tensor) -> torch.Tensor:
        if self.top_p >= 1.0:
            return scores
        flat = scores.reshape(-1, scores.shape[-1])
        keep = flat >= self.boundary(flat)
        return scores.masked_fill(~keep.reshape(scores.shape), self.filter_value)


def log_z64(x: torch.Tensor, block: int = 2**21) -> torch.Tensor:
    """float64 log-sum-exp of each row of (rows, V) ``x``, a few rows at a time (``block`` elements)."""
    step = max(1, block // max(x.shape[-1], 1))
    return torch.cat([torch.logsumexp(x[i : i + step].double(), -1) for i in range(0, x.shape[0], step)])


def top_p_reference(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """The kept mask of :class:`TopPThreshold` by a full sort (tests and benchmark 9): descending logits,
    float64 cumulative mass, every token at or above the first that reaches ``top_p``."""
    flat = scores.reshape(-1, scores.shape[-1])
    vals = flat.sort(dim=-1, descending=True).values
    cum = torch.exp(vals.double() - log_z64(flat)[:, None]).cumsum(-1)
    first = (cum < top_p).sum(-1, keepdim=True).clamp(max=flat.shape[-1] - 1)
    return (flat >= vals.gather(-1, first)).reshape(scores.shape)


# transformers warpers the registry names, done here without a full sort over the vocabulary (issue: top-p
# generation over Gemma's 262k vocabulary took twice as long as plain sampling)
WARPERS = {"TopPLogitsWarper": TopPThreshold}


def sampling_processors(sampler: str, temperature: float, param: float | None = None) -> list[LogitsProcessor]:
    """transformers warpers of a sampler setting, in generate()'s own order: temperature, then the
    registry's truncation warper with ``param`` (top-p as :class:`TopPThreshold`, the same truncation
    without a full sort). Calibrated samplers get only the temperature here; their own processors come
    from :func:`calibrated_processors`. The entropy recorder goes after all."""
    entry = registry_entry(sampler)
    procs: list[LogitsProcessor] = [TemperatureLogitsWarper(temperature)] if temperature != 1.0 else []
    if entry.warper is None:
        return procs
    if param is None:
        raise ValueError(f"sampler {sampler!r} needs a param")
    cls, keyword, kind = entry.warper
    return [*procs, (WARPERS.get(cls) or getattr(transformers, cls))(**{keyword: kind(param)})]


class EntropyRecorder(LogitsProcessor):
    """Records, per step, the entropy of the final scores and the log-probability of the token drawn.

    Must be the last processor: it sees exactly the scores the sampler normalises. It returns
    the scores unchanged. The drawn token of step t is known at step t + 1 (it is the last
    column of ``input_ids``), or from the final sequences for the last step; see :meth:`finish`.
    """

    def __init__(self):
        self.entropy: list[torch.Tensor] = []
        self.logprob: list[torch.Tensor] = []
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._last is not None:
            self.logprob.append(self._logprob(input_ids[:, -1:]))
        x = upcast(scores)
        logz, ent = logz_entropy(x)  # one pass serves the entropy now and the drawn token's logprob next step
        self.entropy.append(ent.float())
        self._last = (x, logz)
        return scores

    def _logprob(self, tokens: torch.Tensor) -> torch.Tensor:
        x, logz = self._last
        return (x.gather(-1, tokens).squeeze(-1).double() - logz).float()

    def finish(self, sequences: torch.LongTensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(entropy, logprob), each (B, steps), once generation has returned ``sequences``."""
        if self._last is not None:
            self.logprob.append(self._logprob(sequences[:, -1:]))
            self._last = None
        return torch.stack(self.entropy, 1).cpu(), torch.stack(self.logprob, 1).cpu()


class HiddenTap:
    """Keeps the base model's last hidden state at the newest position of every forward."""

    def __init__(self, model):
        self.last: torch.Tensor | None = None
        base = getattr(model, model.base_model_prefix)
        self.handle = base.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        self.last = output.last_hidden_state[:, -1]

    def remove(self):
        self.handle.remove()


class HeadPredictor:
    """f for the candidates from the trained head on the tapped hidden state."""

    def __init__(self, head: FutureEntropyHead, tap: HiddenTap):
        self.head, self.tap = head, tap

    def __call__(self, input_ids: torch.Tensor, top_idx: torch.Tensor, top_logp: torch.Tensor) -> torch.Tensor:
        return self.head(self.tap.last, top_logp, top_idx)


class LookaheadPredictor:
    """f for the candidates = exact entropy of the next distribution after each (one-step lookahead).

    Keeps its own KV cache of the sequences (the prompt's attention mask given, generated tokens
    all real), so each step costs one token to extend the cache plus one per candidate.
    """

    def __init__(self, model, prompt_mask: torch.Tensor):
        self.model, self.key_mask, self.past = model, prompt_mask.bool(), None
        self.forward_tokens = 0

    @torch.inference_mode()
    def __call__(
        self, input_ids: torch.Tensor, top_idx: torch.Tensor, top_logp: torch.Tensor | None = None
    ) -> torch.Tensor:
        B, n = input_ids.shape
        if self.key_mask.shape[1] < n:
            self.key_mask = torch.cat([self.key_mask, self.key_mask.new_ones(B, n - self.key_mask.shape[1])], 1)
        have = 0 if self.past is None else self.past.get_seq_length()
        new = input_ids[:, have:]
        pos = (self.key_mask.long().cumsum(-1) - 1).clamp(min=0)[:, have:]
        out = self.model(
            input_ids=new,
            attention_mask=self.key_mask.long(),
            position_ids=pos,
            past_key_values=self.past,
            use_cache=True,
            logits_to_keep=1,
        )
        self.past = out.past_key_values
        k = top_idx.shape[1]
        ends = torch.full((B, k), n, device=input_ids.device)
        self.forward_tokens += new.numel() + top_idx.numel()
        f = candidate_entropies(self.model, self.past, self.key_mask, ends, top_idx.to(self.key_mask.device))
        return f.to(top_idx.device)


class FutureEntropyTilt(LogitsProcessor):
    """p_ent ∝ p^(1 + a_t) exp(-a_t f) on the top-K candidates (see :func:`tilt_logprobs`);
    ``a_t`` from the step bucket of the generation step t (0 = first generated token)."""

    def __init__(self, predictor, alphas: list[float], edges: list[int], candidates: int, prompt_width: int):
        self.predictor, self.alphas, self.edges = predictor, np.asarray(alphas, float), edges
        self.k, self.prompt_width = candidates, prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.prompt_width
        a = float(self.alphas[step_bucket([step], self.edges)[0]])
        logp = torch.log_softmax(scores.float(), -1)
        top = logp.topk(self.k, -1)
        f = self.predictor(input_ids, top.indices, top.values)
        return tilt_logprobs(logp, f, top.indices, a)


class Mirostat(LogitsProcessor):
    """Mirostat (v2 form, Basu et al. 2021): keep the tokens whose surprise -log p is at most mu,
    then move mu by eta * (target - surprise of the token just drawn), so per-step surprise is held
    near ``target`` (nats). The surprise that drives mu is measured under the untruncated
    distribution, which is also defined on human text (where the next token may lie outside the
    kept set). mu starts at 2 * target, as in the paper."""

    def __init__(self, target: float, eta: float = 0.1):
        self.target, self.eta = float(target), float(eta)
        self.mu: torch.Tensor | None = None
        self._last_logp: torch.Tensor | None = None

    def step(self, logp: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
        """Update mu with the previous token (B,) (None at the first step); return masked logp."""
        if self.mu is None:
            self.mu = torch.full(logp.shape[:1], 2 * self.target, dtype=torch.float64, device=logp.device)
        if previous is not None and self._last_logp is not None:
            s = -self._last_logp.gather(-1, previous[:, None])[:, 0].double()
            self.mu = self.mu - self.eta * (s - self.target)
        self._last_logp = logp
        keep = (-logp <= self.mu[:, None].to(logp.dtype)) | (logp == logp.max(-1, keepdim=True).values)
        return logp.masked_fill(~keep, float("-inf"))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        logp = torch.log_softmax(scores.float(), -1)
        return self.step(logp, input_ids[:, -1] if self._last_logp is not None else None)


def load_calibration(path: str | Path) -> dict:
    """The predictor JSON written by the train_predictor rule (alphas, buckets, mirostat target...)."""
    return json.loads(Path(path).read_text())


def tilt_alphas(sampler: str, calib: dict, param: float | None = None) -> list[float]:
    """The alpha of each step bucket: fitted by train_predictor, or ``param`` in every bucket (a setting's
    fixed alpha, to trace the tilt's trade-off curve)."""
    fitted = [float(b["alpha"]) for b in calib["alpha"][sampler]]
    return fitted if param is None else [float(param)] * len(fitted)


def mirostat_target(calib: dict, param: float | None = None) -> float:
    """Mirostat's target surprise (nats): the model's own log loss on calibration text, or ``param``."""
    return float(calib["mirostat_target"] if param is None else param)


def calibrated_processors(sampler: str, model, calib: dict, head: FutureEntropyHead | None, param: float | None = None):
    """A function (prompt input_ids, attention_mask) -> logits processors for one batch, for the
    calibrated samplers; None for the others. ``head``: the loaded predictor head (future_entropy);
    ``param``: the setting's fixed alpha (tilts) or target (mirostat), None for the fitted ones."""
    entry = registry_entry(sampler)
    if entry.kind != "calibrated":
        return None
    if not entry.tilts:  # mirostat
        return lambda ids, mask: [Mirostat(mirostat_target(calib, param), calib["mirostat_eta"])]
    k, edges = calib["candidates"], calib["step_buckets"]
    alphas = tilt_alphas(sampler, calib, param)
    if entry.predictor == "head":
        if head is None:
            raise ValueError(f"sampler {sampler!r} needs the predictor head (train_predictor output)")
        tap = HiddenTap(model)
        return lambda ids, mask: [FutureEntropyTilt(HeadPredictor(head, tap), alphas, edges, k, ids.shape[1])]
    return lambda ids, mask: [FutureEntropyTilt(LookaheadPredictor(model, mask), alphas, edges, k, ids.shape[1])]


class ReferenceTilt:
    """A tilt sampler along a human reference: adjusts a chunk of tempered scores at positions
    ``start ..`` (step buckets from the position), f from the head on the hidden states ``h`` or from
    the lookahead's candidates ``top`` and entropies ``f``."""

    def __init__(self, sampler: str, calib: dict, head: FutureEntropyHead | None, param: float | None = None):
        self.alphas = tilt_alphas(sampler, calib, param)
        self.edges, self.k, self.head = calib["step_buckets"], calib["candidates"], head
        self.uses_head = registry_entry(sampler).predictor == "head"

    def __call__(self, scores: torch.Tensor, *, h: torch.Tensor, start: int, top=None, f=None) -> torch.Tensor:
        steps = np.arange(start, start + len(h))
        a = torch.tensor([self.alphas[q] for q in step_bucket(steps, self.edges)], device=scores.device)
        lp = torch.log_softmax(scores, -1)
        if self.uses_head:
            t = lp.topk(self.k, -1)
            return tilt_logprobs(lp, self.head(h, t.values, t.indices), t.indices, a)
        return tilt_logprobs(lp, f, top, a)


class ReferenceMirostat:
    """Mirostat along a human reference: its mu driven by the surprise of the human tokens ``targets``;
    chunks must come in order."""

    def __init__(self, calib: dict, targets: torch.Tensor, param: float | None = None):
        self.m, self.targets = Mirostat(mirostat_target(calib, param), calib["mirostat_eta"]), targets

    def __call__(self, scores: torch.Tensor, *, h: torch.Tensor, start: int, top=None, f=None) -> torch.Tensor:
        lp = torch.log_softmax(scores, -1)
        prev = self.targets
        return torch.cat(
            [
                self.m.step(lp[q : q + 1], prev[start + q - 1 : start + q] if start + q else None)
                for q in range(lp.shape[0])
            ]
        )


def reference_adjuster(
    sampler: str, calib: dict | None, head: FutureEntropyHead | None, targets: torch.Tensor, param: float | None = None
):
    """The function (tempered scores, h=, start=, top=, f=) -> final scores of a calibrated sampler
    along one reference (``targets``: its tokens; ``param``: as :func:`calibrated_processors`), or None
    for the others."""
    entry = registry_entry(sampler)
    if entry.kind != "calibrated":
        return None
    if calib is None:
        raise ValueError(f"sampler {sampler!r} needs the model's calibration file (train_predictor output)")
    return ReferenceTilt(sampler, calib, head, param) if entry.tilts else ReferenceMirostat(calib, targets, param)
