"""Tokenizers that keep every token's character offsets into the manifest's text.

Two families, one interface (`tokenize(texts) -> list[TokenizedText]`):

- `SpacyTokenizer`: spaCy's rule-based tokenizer of a blank pipeline (`spacy.blank("en")`,
  `spacy.blank("id")`); no statistical model and no data download. Optionally lower-cases
  the token strings; offsets always point at the original characters.
- `TransformerTokenizer`: a `transformers` fast tokenizer (WordPiece, BPE, Unigram) from a
  local folder or a hub name; gives input ids too. Special tokens such as `[CLS]`/`[SEP]`
  get offsets `(-1, -1)`: they cover no text.

Offsets are Python string indices (Unicode code points), so `text[start:end]` is the exact
source of a token. Texts are cleaned first (see `clean_text`) without changing their length,
so offsets stay valid for the text as stored in the manifest.

Truncation keeps the head: the first `max_length` tokens (for transformers, special tokens
included in the count). Very long texts are cut at a space well past the point where
`max_length` tokens end before they are tokenized, which gives the same tokens as tokenizing
the whole text and keeps 100k-character reviews cheap.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

# C0/C1 control characters (tab, newline and carriage return are ordinary whitespace) and
# lone UTF-16 surrogates, which cannot be encoded as UTF-8 and so cannot be written to Arrow.
_UNSAFE_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
# Characters of text read per token the tokenizer may keep, before a text is cut; a token is
# rarely longer than 10 characters, so a cut this far out almost never needs a second pass.
_CHARS_PER_TOKEN_BUDGET = 24
_MIN_CUT_CHARS = 2000


@dataclass
class TokenizedText:
    """One text's tokens: `tokens[i]` came from `text[starts[i]:ends[i]]`.

    `ids` are the model's input ids (transformer tokenizers only). `truncated` says whether
    tokens beyond `max_length` were dropped.
    """

    tokens: list[str]
    starts: list[int]
    ends: list[int]
    ids: list[int] | None = None
    truncated: bool = False

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass
class TextStats:
    """Counts of the odd texts met while tokenizing, for the stage's summary."""

    texts: int = 0
    empty: int = 0
    cleaned: int = 0
    truncated: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)

    def note(self, kind: str, item_id: str, keep: int = 10) -> None:
        """Remember a few ids of each kind, to show the user where to look."""
        examples = self.examples.setdefault(kind, [])
        if len(examples) < keep:
            examples.append(item_id)

    def as_dict(self) -> dict[str, int]:
        return {"texts": self.texts, "empty": self.empty, "cleaned": self.cleaned,
                "truncated": self.truncated}


def clean_text(value: object) -> tuple[str, bool]:
    """`(text, changed)`: control characters and lone surrogates become spaces.

    Missing values (None, NaN) become "". The length never changes, so character offsets
    computed on the cleaned text are offsets into the original.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "", False
    text = value if isinstance(value, str) else str(value)
    cleaned = _UNSAFE_CHARS.sub(" ", text)
    return cleaned, cleaned != text


def head_cut(text: str, max_tokens: int) -> int | None:
    """A cut position (at a space) past which no kept token can start, or None for short text."""
    budget = max(_MIN_CUT_CHARS, max_tokens * _CHARS_PER_TOKEN_BUDGET)
    if len(text) <= budget:
        return None
    cut = text.rfind(" ", budget // 2, budget)
    if cut < 0 or not text[cut:].strip():
        return None
    return cut


class SpacyTokenizer:
    """spaCy's rule-based tokenizer for one language, e.g. `SpacyTokenizer("en")`."""

    def __init__(self, language: str = "en", *, lowercase: bool = True, max_length: int = 128,
                 batch_size: int = 1000):
        import spacy

        self.language = language
        self.lowercase = lowercase
        self.max_length = max_length
        self.batch_size = batch_size
        # A blank pipeline is only the tokenizer with the language's rules and exceptions.
        self._tokenizer = spacy.blank(language).tokenizer
        self.name = f"spacy-{language}"

    def describe(self) -> dict:
        import spacy

        return {"kind": "spacy", "name": self.name, "language": self.language,
                "lowercase": self.lowercase, "max_length": self.max_length,
                "spacy": spacy.__version__}

    def tokenize(self, texts: list[str]) -> list[TokenizedText]:
        """Tokenize cleaned texts (see `clean_text`), in one batched pass."""
        cuts = [head_cut(t, self.max_length) for t in texts]
        heads = [t if c is None else t[:c] for t, c in zip(texts, cuts)]
        results = [self._from_doc(doc)
                   for doc in self._tokenizer.pipe(heads, batch_size=self.batch_size)]
        for index, (result, cut) in enumerate(zip(results, cuts)):
            if cut is None:
                continue
            if len(result) < self.max_length:
                # The cut came too early (very long tokens): tokenize the whole text.
                results[index] = self._from_doc(self._tokenizer(texts[index]))
            else:
                result.truncated = True
        return results

    def _from_doc(self, doc) -> TokenizedText:
        tokens, starts, ends = [], [], []
        truncated = False
        for token in doc:
            if token.is_space:
                continue
            if len(tokens) == self.max_length:
                truncated = True
                break
            text = token.text
            tokens.append(text.lower() if self.lowercase else text)
            starts.append(token.idx)
            ends.append(token.idx + len(text))
        return TokenizedText(tokens, starts, ends, truncated=truncated)


class TransformerTokenizer:
    """A `transformers` fast tokenizer; `model` is a local folder or a hub name."""

    def __init__(self, model: str, *, max_length: int = 128):
        from transformers import AutoTokenizer

        self.model = str(model)
        self.max_length = max_length
        self._tok = AutoTokenizer.from_pretrained(self.model, use_fast=True)
        if not getattr(self._tok, "is_fast", False):
            raise ValueError(f"{model} has no fast tokenizer; character offsets need one")
        # A head cut before tokenizing is only right when truncation keeps the head.
        self._can_cut = getattr(self._tok, "truncation_side", "right") == "right"
        # The Rust tokenizer itself, truncating as the Python wrapper would: its encodings
        # carry ids, token strings, offsets and the special-token mask without a Python pass.
        from tokenizers import Tokenizer

        self._backend = Tokenizer.from_str(self._tok.backend_tokenizer.to_str())
        self._backend.no_padding()
        self._backend.enable_truncation(max_length, stride=0, strategy="longest_first",
                                        direction="left" if not self._can_cut else "right")
        self.name = f"transformers:{self.model}"

    @property
    def pad_id(self) -> int:
        pad = self._tok.pad_token_id
        return 0 if pad is None else int(pad)

    def describe(self) -> dict:
        import transformers

        return {"kind": "transformers", "name": self.name, "model": self.model,
                "class": type(self._tok).__name__, "max_length": self.max_length,
                "vocab_size": len(self._tok), "transformers": transformers.__version__}

    def tokenize(self, texts: list[str]) -> list[TokenizedText]:
        """Tokenize cleaned texts in one batched call of the fast tokenizer."""
        if not texts:
            return []
        cuts = [head_cut(t, self.max_length) if self._can_cut else None for t in texts]
        heads = [t if c is None else t[:c] for t, c in zip(texts, cuts)]
        results = []
        for index, encoding in enumerate(self._backend.encode_batch(heads)):
            special = encoding.special_tokens_mask
            starts = [-1 if sp else o[0] for o, sp in zip(encoding.offsets, special)]
            ends = [-1 if sp else o[1] for o, sp in zip(encoding.offsets, special)]
            results.append(TokenizedText(encoding.tokens, starts, ends, ids=encoding.ids,
                                         truncated=bool(encoding.overflowing)
                                         or cuts[index] is not None))
        for index, cut in enumerate(cuts):
            if cut is not None and len(results[index]) < self.max_length:
                results[index] = self.tokenize_one_uncut(texts[index])
        return results

    def tokenize_one_uncut(self, text: str) -> TokenizedText:
        saved, self._can_cut = self._can_cut, False
        try:
            return self.tokenize([text])[0]
        finally:
            self._can_cut = saved


def tokenize_texts(tokenizer, values: list[object], ids: list[str], stats: TextStats
                   ) -> list[TokenizedText]:
    """Clean and tokenize a batch of manifest texts, counting the odd ones in `stats`."""
    texts = []
    for item_id, value in zip(ids, values):
        text, changed = clean_text(value)
        stats.texts += 1
        if changed:
            stats.cleaned += 1
            stats.note("cleaned", item_id)
        if not text.strip():
            stats.empty += 1
            stats.note("empty", item_id)
        texts.append(text)
    results = tokenizer.tokenize(texts)
    for item_id, result in zip(ids, results):
        if result.truncated:
            stats.truncated += 1
            stats.note("truncated", item_id)
    return results
