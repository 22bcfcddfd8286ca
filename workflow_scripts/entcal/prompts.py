"""Prompts and references: the token ids a model is given, and where its generation stops.

An evaluation example (a row of ``examples.parquet``: optional ``prefix`` and ``instruction``, then the
window ``text``) becomes, for one model's tokenizer:

- prompt ids = :func:`prefix_ids` (the tokenizer's special start tokens, and the instruction: base
  models ``Q: {instruction}\\nA: ``, instruct models their chat template with the generation prompt
  opened) + the first ``prompt_tokens`` tokens of the window;
- reference ids = the next tokens of the window, at most ``ref_tokens`` (the human continuation that
  is scored).

:func:`select_examples` takes the first ``n`` examples, in file order, that qualify under the model's
tokenizer, as the authors' ``get_prompt_and_response_ids`` does: the reference holds at least
``min_ref_tokens`` tokens, and prompt + ``ref_tokens`` new tokens stay strictly below the context
(``len(prompt) + max_new_tokens < max_context``). Generation, scoring and the predictor's fit call it
with the same arguments, so they see the same prompts. It streams the Parquet file, so a whole
WikiText-103 or WritingPrompts split costs only the documents read before the n-th qualifying one.

With ``text_rules="authors"`` an example without instruction (WikiText) is tokenised whole with its
special tokens and cut at ``prompt_tokens``: the prompt counts the BOS (127 article tokens after it for
Llama tokenizers), as in the authors' code. ``paper`` (default) gives every prompt ``prompt_tokens``
human tokens after the special tokens.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np
import torch

from entcal.files import SELECTION_KEY, check_file, read_parquet

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


def special_prefix(tok) -> list[int]:
    """The special tokens the tokenizer puts before text (BOS for Llama-style tokenizers, none for
    Qwen2.5 and Pythia)."""
    return _strip_eos(tok, list(tok("", add_special_tokens=True)["input_ids"]))


def _appends_eos(tok) -> bool:
    """Whether the tokenizer appends eos to what it encodes with its special tokens."""
    eos = tok.eos_token_id
    with_, without = tok("a", add_special_tokens=True)["input_ids"], tok("a", add_special_tokens=False)["input_ids"]
    return eos is not None and bool(with_) and with_[-1] == eos and (not without or without[-1] != eos)


def _strip_eos(tok, ids: list[int]) -> list[int]:
    """A prompt never ends in eos (the authors' ``encode_prompt`` drops one a tokenizer appends; a BOS
    that happens to share the eos id, as in GPT-NeoX's tokenizer, stays)."""
    return ids[:-1] if ids and ids[-1] == tok.eos_token_id and _appends_eos(tok) else ids


def prefix_ids(tok, prefix: str = "", instruction: str = "", chat: bool = False) -> list[int]:
    """Tokens put before an example's window.

    With an ``instruction`` (WritingPrompts, CodeContests): the model's chat template with the
    instruction as the user turn and the generation prompt opened (``chat``: instruct models; the
    window then starts the assistant turn), else the paper's plain format ``Q: {instruction}\\nA: ``
    after the tokenizer's special tokens. Without one: ``prefix`` with the special tokens, or just
    the special tokens.
    """
    if instruction:
        if chat:
            if not getattr(tok, "chat_template", None):
                raise ValueError(
                    f"an instruct model's tokenizer ({getattr(tok, 'name_or_path', '?')}) has no chat template"
                )
            text = tok.apply_chat_template(
                [{"role": "user", "content": instruction}], add_generation_prompt=True, tokenize=False
            )
            return list(tok(text, add_special_tokens=False)["input_ids"])
        return _strip_eos(tok, list(tok(f"{prefix}Q: {instruction}\nA: ", add_special_tokens=True)["input_ids"]))
    return _strip_eos(tok, list(tok(prefix, add_special_tokens=True)["input_ids"])) if prefix else special_prefix(tok)


def iter_examples(examples) -> Iterable:
    """Rows (attribute access: example_id, prefix, instruction, text) of a DataFrame, or streamed from
    a Parquet path a record batch at a time."""
    if isinstance(examples, (str, Path)):
        from types import SimpleNamespace

        import pyarrow.parquet as pq

        pf = pq.ParquetFile(examples)
        cols = [c for c in ("example_id", "prefix", "instruction", "text") if c in pf.schema_arrow.names]
        for batch in pf.iter_batches(batch_size=256, columns=cols):
            for row in batch.to_pylist():
                yield SimpleNamespace(**{"prefix": "", "instruction": "", **row})
    else:
        yield from examples.itertuples()


_CUT = re.compile(r"(?<=\S) (?=\S)")


def _cut(text: str, chars: int) -> int:
    """The first position at or after ``chars`` where no token can straddle: a single space between two
    non-space characters. Every pre-tokenizer of the grid's models (GPT-2/Pythia and Llama 3/Qwen2.5
    regular expressions, Llama 2's sentencepiece pieces, which never hold an inner space) starts a new
    piece at such a space; ``len(text)`` if there is none."""
    if chars >= len(text):
        return len(text)
    m = _CUT.search(text, chars)
    return m.start() if m else len(text)


def tokenize_heads(tok, texts: list[str], need: int, chars_per_token: float = 6.0) -> list[list[int]]:
    """Token ids of each text, equal to the first tokens of the whole text's tokenisation and at least
    ``need`` of them (or all of them when the text is shorter).

    Each text is tokenised up to a cut (:func:`_cut`) after about ``need`` x ``chars_per_token``
    characters, doubled until the tokens suffice: a 400 kB WikiText article costs what its first 13 kB
    cost. The texts go to the tokenizer as one batch (its Rust threads encode them in parallel).
    """
    chars = [max(int(need * chars_per_token), 256)] * len(texts)
    out: list[list[int] | None] = [None] * len(texts)
    todo = list(range(len(texts)))
    while todo:
        cuts = [_cut(texts[i], chars[i]) for i in todo]
        enc = tok([texts[i][:c] for i, c in zip(todo, cuts)], add_special_tokens=False)["input_ids"] if todo else []
        again = []
        for i, c, ids in zip(todo, cuts, enc):
            if len(ids) >= need or c >= len(texts[i]):
                out[i] = list(ids)
            else:
                chars[i] *= 2
                again.append(i)
        todo = again
    return out


def select_examples(
    tok,
    examples,
    prompt_tokens: int,
    ref_tokens: int,
    min_ref_tokens: int,
    n: int,
    chat: bool = False,
    max_context: int | None = None,
    text_rules: str = "paper",
    chat_instruction: str | None = None,
) -> list[tuple[int, list[int], list[int]]]:
    """The first ``n`` examples (file order) that qualify under ``tok``; see the module docstring.

    ``examples``: a DataFrame or the path of ``examples.parquet`` (streamed). Returns a list of
    (example_id, prompt_ids, reference_ids). Examples whose reference is shorter than
    ``min_ref_tokens`` are skipped, and so (with ``max_context``) are those whose prompt +
    ``ref_tokens`` would reach the context. Fewer than ``n`` is a warning, or an error for a file
    written by the paper's selection (``selection: first``); none is an error. ``chat_instruction``
    (instruct models, ``chat``): the user turn for examples that have no instruction of their own, so
    the window starts the assistant turn of the chat template.
    """
    out, too_long, too_short = [], 0, 0
    need = prompt_tokens + max(ref_tokens, min_ref_tokens)
    rows = iter_examples(examples)
    while len(out) < n:
        chunk = list(itertools.islice(rows, 64))
        if not chunk:
            break
        heads = tokenize_heads(tok, [r.text for r in chunk], need)
        for r, body in zip(chunk, heads):
            instruction = getattr(r, "instruction", "") or ((chat_instruction or "") if chat else "")
            pre = prefix_ids(tok, r.prefix or "", instruction, chat)
            if text_rules == "authors" and not instruction:
                body, pre = pre + body, []  # the whole encoded document, specials included, cut at prompt_tokens
            if len(body) < prompt_tokens + min_ref_tokens:
                too_short += 1
                continue
            if max_context and len(pre) + prompt_tokens + ref_tokens >= max_context:
                too_long += 1
                continue
            out.append(
                (int(r.example_id), pre + body[:prompt_tokens], body[prompt_tokens : prompt_tokens + ref_tokens])
            )
            if len(out) == n:
                break
    log.info(
        "selected %d examples; skipped %d with fewer than %d + %d tokens%s",
        len(out),
        too_short,
        prompt_tokens,
        min_ref_tokens,
        f" and {too_long} whose prompt + {ref_tokens} tokens reach the {max_context}-token context"
        if max_context
        else " (no context limit checked here)",
    )
    if len(out) < n:
        msg = (
            f"only {len(out)} of {n} requested examples qualify ({too_short} too short, {too_long} too long for the "
            "context)"
        )
        if _selection(examples) == "first":
            raise ValueError(
                f"{examples}: {msg}; the paper's selection needs all of them: raise the dataset's max_docs "
                "(or lower generation.n_prompts) and rerun its prepare_dataset rule"
            )
        log.warning(msg)
    if not out:
        raise ValueError(f"no example holds {prompt_tokens}+{min_ref_tokens} tokens within the context")
    return out


def _selection(examples) -> str | None:
    """The selection mode recorded in an examples file (None for a DataFrame or an older file)."""
    if not isinstance(examples, (str, Path)):
        return None
    import pyarrow.parquet as pq

    return ((pq.read_schema(examples).metadata or {}).get(SELECTION_KEY) or b"").decode() or None


def calibration_windows(
    windows_path: str | Path, examples_path: str | Path | None = None, prompts_path: str | Path | None = None
) -> pd.DataFrame:
    """A model's calibration windows. Under ``selection: random`` they are ``calibration.parquet``'s. Under
    ``selection: first`` (the paper's) they are the examples after the last one the model's prompts use, so
    no document that its first ``n_prompts`` qualifying ones include is ever used for calibration."""
    import pyarrow.parquet as pq

    if _selection(windows_path) != "first":
        windows = read_parquet(windows_path)
        if windows.empty:
            raise ValueError(
                f"{windows_path}: no calibration windows (the dataset was prepared with no calibrated "
                "sampler configured, or datasets.<name>.calibration_fraction is 0)"
            )
        return windows
    if examples_path is None or prompts_path is None:
        raise ValueError(
            f"{windows_path}: selection first takes a model's calibration windows after its prompts: "
            "pass the examples and the model's prompts"
        )
    last = int(read_parquet(prompts_path, columns=["example_id"])["example_id"].max())
    check_file(examples_path)
    windows = pq.read_table(examples_path, filters=[("example_id", ">", last)]).to_pandas()
    if windows.empty:
        raise ValueError(
            f"{examples_path}: no document is left after example {last}, the last of the model's prompts "
            "(file order), for the calibration windows: raise datasets.<name>.max_docs or lower "
            "generation.n_prompts"
        )
    log.info("calibration windows: %d examples after example %d, the model's last prompt", len(windows), last)
    return windows


def end_token_ids(tok, model_dir: str | Path | None = None) -> list[int]:
    """Every id that ends a generation: the tokenizer's eos and every ``eos_token_id`` of the model's
    ``generation_config.json`` (instruct models list several, e.g. Llama 3's ``<|eot_id|>``), as vLLM
    stops. Sorted, without duplicates."""
    ids = set()
    if tok.eos_token_id is not None:
        ids.add(int(tok.eos_token_id))
    if model_dir is not None:
        f = Path(model_dir) / "generation_config.json"
        if f.is_file():
            eos = json.loads(f.read_text()).get("eos_token_id")
            ids.update(int(e) for e in (eos if isinstance(eos, list) else [eos]) if e is not None)
    return sorted(ids)


def trim_at_end(tokens: list[int], end_ids) -> tuple[list[int], bool]:
    """``tokens`` up to and including the first end id (the end token is kept), and whether one came."""
    ends = set(end_ids)
    for i, t in enumerate(tokens):
        if t in ends:
            return tokens[: i + 1], True
    return tokens, False


def pad(seqs: list[list[int]], pad_id: int, side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of a batch of sequences of different lengths, padded on ``side``
    (``left`` for generation, so every row's next token is at the end; ``right`` for scoring)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        sl = slice(width - len(s), width) if side == "left" else slice(0, len(s))
        ids[i, sl] = torch.tensor(s, dtype=torch.long)
        mask[i, sl] = 1
    return ids, mask


def length_order(seqs: list[list[int]]) -> list[int]:
    """Indices that sort ``seqs`` by length, stably (equal lengths keep their order): batches of
    similar lengths waste little padding, and a job whose prompts are all equally long is unchanged."""
    return sorted(range(len(seqs)), key=lambda i: len(seqs[i]))


def load_prompts(path: str | Path) -> list[tuple[int, list[int], list[int]]]:
    """(example_id, prompt_ids, reference_ids) of a prompts file, in its order (checked against its sidecar).
    The ids are Python ints, not the Parquet arrays' numpy integers (vLLM's request serialisation rejects those)."""
    t = read_parquet(path, columns=["example_id", "prompt_ids", "reference_ids"])
    return [
        (int(e), np.asarray(p).tolist(), np.asarray(r).tolist())
        for e, p, r in zip(t["example_id"], t["prompt_ids"], t["reference_ids"])
    ]
