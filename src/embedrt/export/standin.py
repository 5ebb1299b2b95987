"""Seeded random BERT sentence-transformers models with the shape of real ones.

No model hub is needed: tests, benchmarks and first-time users build a stand-in of a real
architecture (by default DMetaSoul's 4-layer Chinese SBERT student) with real or synthetic vocab.
Its numbers are meaningless; its shape, speed and export behaviour are those of the real model.
"""

from __future__ import annotations

import importlib
import shutil
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedrt.errors import ExportError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_PUNCTUATION = "，。！？；：、“”‘’（）【】《》～…—·￥％＋－＝／＼＠＃＆＊" + string.punctuation


@dataclass(frozen=True)
class StandinSpec:
    """Architecture of the stand-in; the defaults are the DMetaSoul student (about 45.6M parameters)."""

    num_layers: int = 4
    hidden_size: int = 768
    num_heads: int = 12
    intermediate_size: int = 3072
    vocab_size: int = 21128
    max_position_embeddings: int = 512
    max_seq_length: int = 512
    pooling: str = "mean"
    normalize: bool = False
    initializer_range: float = 0.02
    seed: int = 0


DMETASOUL_STUDENT = StandinSpec()
TINY = StandinSpec(
    num_layers=2,
    hidden_size=32,
    num_heads=4,
    intermediate_size=64,
    vocab_size=3000,
    max_position_embeddings=128,
    max_seq_length=64,
    initializer_range=0.2,
)


def synthetic_vocab(size: int, extra_chars: str = "") -> list[str]:
    """A BERT-Chinese-like vocabulary: specials, ASCII, punctuation, ``extra_chars``, then CJK ideographs."""
    tokens: list[str] = list(SPECIAL_TOKENS)
    seen = set(tokens)

    def add(token: str) -> None:
        if token not in seen and token.strip():
            seen.add(token)
            tokens.append(token)

    for ch in string.ascii_lowercase + string.digits + _PUNCTUATION + extra_chars:
        add(ch)
    for ch in string.ascii_lowercase + string.digits:
        add("##" + ch)
    codepoint = 0x4E00
    while len(tokens) < size and codepoint <= 0x9FFF:
        add(chr(codepoint))
        codepoint += 1
    filler = 0
    while len(tokens) < size:
        add(f"[unused{filler}]")
        filler += 1
    return tokens[:size]


def build_standin(
    directory: str | Path,
    spec: StandinSpec = DMETASOUL_STUDENT,
    vocab_file: str | Path | None = None,
    extra_chars: str = "",
) -> Path:
    """Save a seeded random sentence-transformers model with ``spec``'s shape to ``directory``.

    ``vocab_file`` (e.g. the real bert-base-chinese ``vocab.txt``) replaces the synthetic vocabulary.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import BertConfig, BertModel, BertTokenizerFast  # type: ignore[attr-defined]

    try:
        modules: Any = importlib.import_module("sentence_transformers.sentence_transformer.modules")
    except ImportError:  # sentence-transformers < 6
        modules = importlib.import_module("sentence_transformers.models")
    Normalize, Pooling, Transformer = modules.Normalize, modules.Pooling, modules.Transformer

    directory = Path(directory)
    hf_dir = directory / "_hf"
    hf_dir.mkdir(parents=True, exist_ok=True)
    if vocab_file is not None:
        vocab = Path(vocab_file).read_text(encoding="utf-8").splitlines()
    else:
        vocab = synthetic_vocab(spec.vocab_size, extra_chars)
    (hf_dir / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    # From the directory holding vocab.txt: transformers 5 ignores BertTokenizerFast(vocab_file=...) and
    # would build a tokenizer with only the special tokens, which reads every word as [UNK].
    tokenizer = BertTokenizerFast.from_pretrained(
        str(hf_dir), do_lower_case=True, tokenize_chinese_chars=True, model_max_length=spec.max_position_embeddings
    )
    if len(tokenizer) != len(set(vocab)):  # bert-base-chinese's vocab.txt repeats a few lines
        raise ExportError(f"the stand-in tokenizer has {len(tokenizer)} tokens, its vocab.txt {len(set(vocab))}")
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=spec.hidden_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        intermediate_size=spec.intermediate_size,
        max_position_embeddings=spec.max_position_embeddings,
        initializer_range=spec.initializer_range,
    )
    torch.manual_seed(spec.seed)
    model = BertModel(config, add_pooling_layer=False)
    model.eval()
    model.save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)

    transformer = Transformer(str(hf_dir), max_seq_length=spec.max_seq_length)
    modules = [transformer, Pooling(spec.hidden_size, pooling_mode=spec.pooling)]
    if spec.normalize:
        modules.append(Normalize())
    out = directory / "model"
    SentenceTransformer(modules=modules, device="cpu").save(str(out))
    shutil.rmtree(hf_dir)
    return out
