"""The sampler registry: every sampler the workflow runs, in one place, with what the rest of the code
asks about it. Data only (no torch): the configuration's checks, the Snakefile and the schema read it
without importing a model library; :mod:`entcal.sampling` builds the logits processors from it.

A sampler setting of the configuration is ``{sampler, temperature, param?}``; the temperature is
applied first (transformers' ``TemperatureLogitsWarper``), then the sampler's own processor:

- ``temperature``: nothing more (``ancestral``);
- ``truncation``: a transformers logits warper built from ``warper`` = (class name, keyword, type)
  with the setting's ``param`` (top_p p, top_k k, min_p ratio, typical mass, eta epsilon);
- ``calibrated``: a processor of :mod:`entcal.sampling` that needs the model and the
  ``train_predictor`` outputs (``future_entropy``: the tilt by the trained head; ``one_step_lookahead``:
  the tilt by the exact entropy after each top-K candidate; ``mirostat``: surprise held at a target).
  Their ``param`` is optional: a fixed alpha (tilts; negative raises the entropy) or target surprise in
  nats (mirostat) in place of the fitted one.

Adding a truncation sampler is one entry here: ``Sampler("name", "truncation", truncates=True,
vllm=False, warper=("SomeLogitsWarper", "its_keyword", float))``; the schema's enum lists it too
(a test checks the two agree).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Sampler:
    name: str
    kind: str  # temperature | truncation | calibrated
    truncates: bool = False  # its support can exclude a token: log loss is scored on an eps-smoothed mixture
    vllm: bool = False  # vLLM samples it natively (the vLLM backend, then an exact entropy pass)
    warper: tuple[str, str, type] | None = None  # truncation: (transformers class, keyword, type of param)
    predictor: str | None = None  # tilts: where f comes from (head: the trained head; lookahead: exact one step)
    extra_forward_per_step: int = 0  # model forward tokens per generated token beyond one ...
    per_candidate_forward: int = 0  # ... plus this many per top-K candidate
    param_domain: str = ""  # "(0, 1]" (a probability mass or ratio), "> 0", "real" or "integer >= 1"
    param_optional: bool = False  # calibrated samplers: a fixed alpha or target in place of the fitted one

    def param_problem(self, value) -> str | None:
        """Why ``value`` is not a valid ``param`` of this sampler (None when it is)."""
        if self.param_domain == "integer >= 1":
            ok = (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and float(value).is_integer()
                and value >= 1
            )
        elif self.param_domain == "(0, 1]":
            ok = isinstance(value, (int, float)) and 0 < value <= 1
        elif self.param_domain == "real":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        else:
            ok = isinstance(value, (int, float)) and value > 0
        return None if ok else f"{self.name} takes a param {self.param_domain or '> 0'}, got {value!r}"

    @property
    def needs_predictor(self) -> bool:
        """Needs the ``train_predictor`` outputs (predictor.json, and the head's weights)."""
        return self.kind == "calibrated"

    @property
    def tilts(self) -> bool:
        """Samples from the future-entropy tilt (alphas fitted per step bucket by train_predictor)."""
        return self.predictor is not None

    @property
    def needs_param(self) -> bool:
        return self.kind == "truncation"

    @property
    def takes_param(self) -> bool:
        """A setting may give ``param``: required for truncation, optional for the calibrated samplers."""
        return self.needs_param or self.param_optional

    def forward_tokens_per_step(self, candidates: int = 0) -> int:
        """Model forward tokens per generated token (the head itself costs one rank-r matmul, not counted)."""
        return 1 + self.extra_forward_per_step + self.per_candidate_forward * candidates


SAMPLERS = {
    s.name: s
    for s in [
        Sampler("ancestral", "temperature", vllm=True),
        Sampler(
            "top_p",
            "truncation",
            truncates=True,
            vllm=True,
            warper=("TopPLogitsWarper", "top_p", float),
            param_domain="(0, 1]",
        ),
        Sampler(
            "top_k",
            "truncation",
            truncates=True,
            vllm=True,
            warper=("TopKLogitsWarper", "top_k", int),
            param_domain="integer >= 1",
        ),
        Sampler(
            "min_p",
            "truncation",
            truncates=True,
            vllm=True,
            warper=("MinPLogitsWarper", "min_p", float),
            param_domain="(0, 1]",
        ),
        Sampler(
            "typical",
            "truncation",
            truncates=True,
            warper=("TypicalLogitsWarper", "mass", float),
            param_domain="(0, 1]",
        ),
        Sampler("eta", "truncation", truncates=True, warper=("EtaLogitsWarper", "epsilon", float), param_domain="> 0"),
        # calibrated: param, when given, is a fixed alpha in every step bucket (tilts) or the target surprise in
        # nats (mirostat), in place of train_predictor's fitted ones: a sweep traces each method's trade-off curve
        Sampler("future_entropy", "calibrated", predictor="head", param_domain="real", param_optional=True),
        Sampler(
            "one_step_lookahead",
            "calibrated",
            predictor="lookahead",
            extra_forward_per_step=1,
            per_candidate_forward=1,
            param_domain="real",
            param_optional=True,
        ),  # its own cache: one token to extend it, one per candidate
        Sampler("mirostat", "calibrated", truncates=True, param_domain="> 0", param_optional=True),
    ]
}


def sampler(name: str) -> Sampler:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r} (known: {', '.join(SAMPLERS)})")
    return SAMPLERS[name]


def names(kind: str | None = None) -> tuple[str, ...]:
    """Sampler names, all or of one kind."""
    return tuple(n for n, s in SAMPLERS.items() if kind is None or s.kind == kind)


CALIBRATED = names("calibrated")  # need the train_predictor outputs of their model x dataset
TRUNCATION = names("truncation")  # take a param
TILTS = tuple(n for n, s in SAMPLERS.items() if s.tilts)
VLLM = tuple(n for n, s in SAMPLERS.items() if s.vllm)
