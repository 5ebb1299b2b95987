"""Tokenization with Hugging Face ``tokenizers`` (Rust), set up exactly as sentence-transformers does."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tokenizers import Encoding, Tokenizer

from embedrt.errors import BundleError, InputError


class TextTokenizer:
    """Truncates to the bundle's ``max_seq_length`` and never pads: batches pad themselves."""

    def __init__(self, path: Path, max_seq_length: int, do_lower_case: bool = False) -> None:
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as err:  # tokenizers raises a bare Exception on a corrupt file
            raise BundleError(
                f"{path} could not be read as a tokenizer ({err}); re-export the bundle with `embedrt export --force`"
            ) from err
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=max_seq_length, strategy="longest_first")
        self._tokenizers = {"right": tokenizer}
        self._path = path
        self.max_seq_length = max_seq_length
        self.do_lower_case = do_lower_case

    def _truncating(self, direction: str) -> Tokenizer:
        """The tokenizer that cuts over-long texts at their end (``right``, as sentence-transformers) or start."""
        found = self._tokenizers.get(direction)
        if found is None:
            if direction != "left":
                raise InputError(f"truncation direction must be 'right' or 'left', got {direction!r}")
            found = Tokenizer.from_file(str(self._path))
            found.no_padding()
            found.enable_truncation(max_length=self.max_seq_length, strategy="longest_first", direction="left")
            self._tokenizers[direction] = found
        return found

    def encode(self, texts: Sequence[str], direction: str = "right") -> list[Encoding]:
        """Token ids of already validated strings, in order, truncated, with [CLS]/[SEP].

        ``direction="left"`` keeps the end of an over-long text instead of its start (TEI's
        ``truncation_direction``); [CLS] and [SEP] stay in place either way.

        A text that is not valid Unicode (a lone surrogate such as ``"\\ud800"``, which JSON and
        Python strings allow) raises :class:`InputError` naming its index.
        """
        tokenizer = self._truncating(direction)
        if self.do_lower_case:
            texts = [text.lower() for text in texts]
        try:
            if len(texts) == 1:  # no thread pool for one text: 30-40 us less per call right after an engine run
                return [tokenizer.encode(texts[0], add_special_tokens=True)]
            return tokenizer.encode_batch(list(texts), add_special_tokens=True)
        except (TypeError, UnicodeEncodeError) as err:  # tokenizers cannot take such a str
            raise _unencodable(texts) or err from err

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(encoding.ids) for encoding in self.encode(texts)]


def _unencodable(texts: Sequence[str]) -> InputError | None:
    """The error for the first text UTF-8 cannot encode, or ``None`` if every text can be encoded."""
    for index, text in enumerate(texts):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            character = repr(text[err.start])
            return InputError(
                f"texts[{index}] is not valid Unicode: character {err.start} is {character}, a lone surrogate "
                "UTF-8 cannot encode; remove it or decode the source text correctly"
            )
    return None
