"""Byte-level BPE tokenizer for the demo's self-trained models, and the encoded training stream.

Outputs of :func:`build_tokenizer` (one per dataset):

- ``tokenizer_dir``: a ``PreTrainedTokenizerFast.save_pretrained`` folder (loads with AutoTokenizer);
  special tokens: ``<|endoftext|>`` (id 0; eos, also used as pad with an attention mask).
- ``train_ids``: ``.npy`` uint16/uint32 array, the training documents' tokens concatenated in
  document order, each document followed by ``<|endoftext|>``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from entcal.files import read_parquet

log = logging.getLogger(__name__)

EOS = "<|endoftext|>"


def train_bpe(texts: list[str], vocab_size: int, seed: int = 0):
    """Train a byte-level BPE on ``texts``; returns a ``transformers.PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS, bos_token=EOS)


def encode_documents(tokenizer, texts: list[str]) -> np.ndarray:
    """Concatenate the token ids of ``texts``, each followed by eos. A document holding the end-of-text string
    itself (``<|endoftext|>`` as text) gets the end-of-text id there, as the tokenizer reads it: the log says in how
    many documents and how many times."""
    eos = tokenizer.eos_token_id
    marker = tokenizer.eos_token
    hits = [t.count(marker) for t in texts if marker and marker in t]
    if hits:
        log.warning(
            "%d documents hold the end-of-text string %r as text (%d times in all): the tokenizer reads each as "
            "the end-of-text token, so the model sees a document end there",
            len(hits),
            marker,
            sum(hits),
        )
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    flat = np.fromiter((t for doc in ids for t in (*doc, eos)), dtype=np.int64)
    dtype = np.uint16 if len(tokenizer) <= np.iinfo(np.uint16).max else np.uint32
    return flat.astype(dtype)


def build_tokenizer(docs_path: str, tokenizer_dir: str, train_ids_path: str, vocab_size: int) -> None:
    """Train the tokenizer on the training split of ``docs.parquet`` and encode that split."""

    docs = read_parquet(docs_path)
    texts = docs.loc[docs["split"] == "train", "text"].tolist()
    tok = train_bpe(texts, vocab_size)
    Path(tokenizer_dir).mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(tokenizer_dir)
    ids = encode_documents(tok, texts)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    log.info("vocab %d; %d training tokens, %.2f bytes/token", len(tok), len(ids), n_bytes / len(ids))
    np.save(train_ids_path, ids)
