"""The exact one-step lookahead (Braverman et al. 2020) and the teacher-forced pass that carries it.

:func:`candidate_entropies`: the entropy of the next distribution after each of a set of candidate
tokens, all candidates in one batched forward over the KV cache with a 4-D attention mask (each
candidate sees its prefix and itself). :func:`reference_lookahead`: one teacher-forced pass over
right-padded sequences that returns the hidden state at every scored position and, when asked, the
top-k candidates there and their lookahead entropies. :func:`teacher_forced` batches (prompt,
reference) pairs through it; scoring (:mod:`entcal.score`) and the alpha fit
(:mod:`entcal.labels`) both read human references this way.
"""

from __future__ import annotations

from typing import Iterator

import torch

from entcal.memory import LOOKAHEAD_LOGITS_BYTES
from entcal.metrics import entropy_from_logprobs, upcast
from entcal.models import input_device
from entcal.prompts import pad


def check_full_cache(past, n_keys: int) -> None:
    """Every layer of ``past`` holds the keys of all ``n_keys`` tokens (sliding-window layers: the
    sequence is shorter than the window), and sliding layers record their past so they can be cropped."""
    for i, layer in enumerate(getattr(past, "layers", [])):
        if not getattr(layer, "is_sliding", False):
            continue
        window = getattr(layer, "sliding_window", None)
        if window is not None and n_keys > window - 1:
            raise ValueError(
                f"the exact one-step lookahead needs the keys of all {n_keys} tokens, but layer {i} of this "
                f"model attends over a sliding window of {window} tokens and keeps only the last {window - 1}: "
                f"keep prompt + generated tokens below {window} for this model (generation.prompt_tokens, "
                "max_new_tokens), or leave one_step_lookahead out of its samplers"
            )
    if hasattr(past, "activate_past_recording"):
        past.activate_past_recording()


@torch.inference_mode()
def candidate_entropies(model, past, key_mask: torch.Tensor, ends: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
    """Entropy of p̂(. | prefix, c) for each query (prefix, candidate c), one batched forward.

    ``past``: the model's cache over S keys for B rows, ``key_mask`` (B, S) bool: keys that are real
    tokens (not padding); ``ends`` (B, Q): query q of row b sees keys [0, ends) of row b;
    ``cands`` (B, Q) candidate tokens. The candidate's position id is the number of real tokens it
    follows. The cache is cropped back to S keys afterwards.

    Sliding-window layers (Gemma 3, Mistral-style) keep only their last ``window - 1`` keys: the
    lookahead needs every key of the S tokens, so a sequence that outgrew a window is an error naming
    it, and below the window the cache records its past (transformers' ``activate_past_recording``)
    so that the candidates can be cropped off again.
    """
    B, S = key_mask.shape
    check_full_cache(past, S)
    Q = cands.shape[1]
    dev = cands.device
    idx = torch.arange(S, device=dev)
    see = (idx[None, None, :] < ends[:, :, None]) & key_mask[:, None, :]  # (B, Q, S)
    self_ = torch.eye(Q, dtype=torch.bool, device=dev).expand(B, Q, Q)
    allowed = torch.cat([see, self_], -1)[:, None]  # (B, 1, Q, S + Q)
    dtype = model.dtype
    mask = torch.zeros(allowed.shape, dtype=dtype, device=dev).masked_fill(~allowed, torch.finfo(dtype).min)
    csum = torch.cat([torch.zeros(B, 1, dtype=torch.long, device=dev), key_mask.long().cumsum(-1)], -1)
    pos = csum.gather(1, ends)
    base = getattr(model, model.base_model_prefix)
    hid = base(
        input_ids=cands, attention_mask=mask, position_ids=pos, past_key_values=past, use_cache=True
    ).last_hidden_state
    past.crop(-Q)  # drop the candidates again (negative: number of tokens to remove)
    return block_entropies(model, hid.reshape(B * Q, -1)).view(B, Q)


def _rows_per_block(model) -> int:
    """Rows of float32 logits per LOOKAHEAD_LOGITS_BYTES (B x Q candidate rows over a 262k vocabulary
    would be tens of GB at once)."""
    return max(1, LOOKAHEAD_LOGITS_BYTES // (4 * model.get_output_embeddings().weight.shape[0]))


def output_logits(model, h: torch.Tensor) -> torch.Tensor:
    """The model's next-token logits from final hidden states (the output projection, then the final
    logit soft-capping of models that have one)."""
    logits = model.get_output_embeddings()(h)
    cap = getattr(model.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def block_entropies(model, h: torch.Tensor) -> torch.Tensor:
    """Entropy of the next-token distribution of each row of final hidden states ``h`` (N, d), the
    vocabulary projection a block of rows at a time."""
    n = _rows_per_block(model)
    out = [
        entropy_from_logprobs(torch.log_softmax(upcast(output_logits(model, h[i : i + n])), -1))
        for i in range(0, h.shape[0], n)
    ]
    return torch.cat(out) if out else h.new_zeros(0)


def block_topk(model, h: torch.Tensor, k: int) -> torch.Tensor:
    """The top-k next tokens of each row of ``h`` (..., d), the vocabulary projection a block of rows at a time."""
    flat = h.reshape(-1, h.shape[-1])
    n = _rows_per_block(model)
    out = [output_logits(model, flat[i : i + n]).topk(k, -1).indices for i in range(0, flat.shape[0], n)]
    return torch.cat(out).view(*h.shape[:-1], k)


@torch.inference_mode()
def reference_lookahead(
    model, ids: torch.Tensor, mask: torch.Tensor, starts: list[int], lengths: list[int], k: int, query_chunk: int = 512
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Teacher-forced pass over right-padded sequences, with the one-step lookahead at each scored
    position when ``k`` > 0.

    Row b scores positions ``starts[b] .. starts[b] + lengths[b] - 1`` (the prediction of token
    ``starts[b] + j`` from the tokens before it). Returns, per row and scored position j (padded
    to max length): the hidden state (B, L, d) and, for ``k`` > 0, the top-k candidate ids
    (B, L, k) of p̂ and their lookahead entropies (B, L, k) (else None, None).
    """
    base = getattr(model, model.base_model_prefix)
    out = base(input_ids=ids, attention_mask=mask, use_cache=k > 0)
    hid, past = out.last_hidden_state, out.past_key_values
    B, L = ids.shape[0], max(lengths)
    # hidden state predicting token starts[b] + j sits at position starts[b] + j - 1
    gather = torch.tensor([[min(s - 1 + j, ids.shape[1] - 1) for j in range(L)] for s in starts], device=hid.device)
    h = hid.gather(1, gather[:, :, None].expand(-1, -1, hid.shape[-1]))
    if k == 0:
        return h, None, None
    top = torch.zeros(B, L, k, dtype=torch.long, device=h.device)
    f = torch.zeros(B, L, k, device=h.device)
    per = max(1, query_chunk // k)
    for j0 in range(0, L, per):
        j1 = min(L, j0 + per)
        top[:, j0:j1] = block_topk(model, h[:, j0:j1], k)  # logits order = log-prob order
        ends = (gather[:, j0:j1] + 1)[:, :, None].expand(-1, -1, k).reshape(B, -1).to(ids.device)
        cands = top[:, j0:j1].reshape(B, -1).to(ids.device)
        f[:, j0:j1] = candidate_entropies(model, past, mask.bool(), ends, cands).view(B, j1 - j0, k).to(h.device)
    return h, top, f


@torch.inference_mode()
def teacher_forced(
    model, pairs: list[tuple[list[int], list[int]]], batch_size: int, pad_id: int, k: int = 0
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]]:
    """Batches of (prompt, reference) pairs through :func:`reference_lookahead`: yields (index of the
    batch's first pair, ids (B, S) on the input device, h (B, L, d), top (B, L, k), f (B, L, k)); row
    i scores the reference of pair ``start + i``, whose token j is ``ids[i, len(prompt) + j]``."""
    device = input_device(model)
    for b in range(0, len(pairs), batch_size):
        batch = pairs[b : b + batch_size]
        ids, mask = pad([p + r for p, r in batch], pad_id, side="right")
        ids, mask = ids.to(device), mask.to(device)
        h, top, f = reference_lookahead(model, ids, mask, [len(p) for p, _ in batch], [len(r) for _, r in batch], k)
        yield b, ids, h, top, f
