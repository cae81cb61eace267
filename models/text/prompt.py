"""Prompt text -> weighted token ids, the way ComfyUI's FLUX tokenizers do it (pure Python).

Emphasis syntax: `(text)` multiplies the weight by 1.1 per nesting level, `(text:1.5)` sets it to
1.5 (replacing what the enclosing groups gave, while still scaling groups nested inside), and
`\\(` / `\\)` are literal parentheses. The text of each weighted segment is tokenized on its own.

CLIP (77 tokens per chunk): BOS, up to 75 tokens, EOS, padded with EOS to 77. A segment of 8 or
more tokens that does not fit is split at the chunk boundary; a shorter one moves whole to the next
chunk (the current chunk is closed and padded). Longer prompts give several chunks.
T5: one sequence, never split: tokens, EOS, then pad id 0 up to a minimum length (256 for FLUX).

ComfyUI's textual-inversion `embedding:name` syntax is not supported; such text is tokenized as
written (what ComfyUI does without an embeddings folder).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Token = tuple[int, float]  # (token id, weight)
TokenizeFn = Callable[[str], Sequence[int]]  # text -> ids including the tokenizer's own specials

CLIP_MAX_LENGTH = 77
T5_MIN_LENGTH = 256
MAX_WORD_LENGTH = 8  # segments this long may be split across CLIP chunks
EMPHASIS = 1.1
_EMBEDDING = re.compile(r"(?<=\s)(?=embedding:)")
_ESC_OPEN, _ESC_CLOSE = "\0\2", "\0\1"


def parse_weights(text: str) -> list[tuple[str, float]]:
    """Split `text` into (segment, weight) pairs by the emphasis syntax; escapes become literal brackets."""
    escaped = text.replace("\\)", _ESC_CLOSE).replace("\\(", _ESC_OPEN)
    return [(_unescape(s), w) for s, w in _weights(escaped, 1.0)]


def _unescape(text: str) -> str:
    return text.replace(_ESC_CLOSE, ")").replace(_ESC_OPEN, "(")


def _top_level_groups(text: str) -> list[str]:
    """Split at top-level parentheses: "a (b (c)) d" -> ["a ", "(b (c))", " d"].

    A stray ")" drives the depth negative and is kept as text, as in ComfyUI.
    """
    parts, current, depth = [], "", 0
    for ch in text:
        if ch == "(":
            if depth == 0 and current:
                parts.append(current)
                current = ""
            current += ch
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                parts.append(current + ch)
                current = ""
            else:
                current += ch
        else:
            current += ch
    if current:
        parts.append(current)
    return parts


def _weights(text: str, weight: float) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    for part in _top_level_groups(text):
        if len(part) < 2 or part[0] != "(" or part[-1] != ")":
            out.append((part, weight))
            continue
        inner, inner_weight = part[1:-1], weight * EMPHASIS
        colon = inner.rfind(":")
        if colon > 0:
            try:
                inner_weight = float(inner[colon + 1 :])
                inner = inner[:colon]
            except ValueError:
                pass  # "(a:b)" without a number is plain emphasis on "a:b"
        out.extend(_weights(inner, inner_weight))
    return out


def _token_groups(tokenize: TokenizeFn, text: str, *, skip_start: int) -> list[list[Token]]:
    """One group per tokenized piece: the tokenizer's start token (skip_start) and end token dropped."""
    groups = []
    for segment, weight in parse_weights(text):
        for piece in _EMBEDDING.split(segment):
            if piece:
                groups.append([(t, weight) for t in list(tokenize(piece))[skip_start:-1]])
    return groups


@dataclass(frozen=True)
class SpecialTokens:
    """Ids a tokenizer adds around text: start (None for T5), end, and the padding id."""

    start: int | None
    end: int
    pad: int

    @classmethod
    def of(cls, tokenize: TokenizeFn, *, has_start: bool, pad_with_end: bool) -> SpecialTokens:
        """Read them off the tokenization of "" (CLIP: [BOS, EOS]; T5: [EOS]); pad = end or 0."""
        empty = list(tokenize(""))
        need = 2 if has_start else 1
        if len(empty) != need:
            raise ValueError(f"tokenizer turns '' into {empty}, expected {need} special tokens")
        start, end = (empty[0], empty[1]) if has_start else (None, empty[0])
        return cls(start, end, end if pad_with_end else 0)


def tokenize_clip(tokenize: TokenizeFn, text: str, *, max_length: int = CLIP_MAX_LENGTH) -> list[list[Token]]:
    """Chunks of exactly `max_length` weighted tokens (BOS ... EOS, EOS-padded), at least one."""
    if max_length < MAX_WORD_LENGTH + 2:
        raise ValueError(f"CLIP max_length must be >= {MAX_WORD_LENGTH + 2}, got {max_length}")
    special = SpecialTokens.of(tokenize, has_start=True, pad_with_end=True)
    assert special.start is not None
    room = max_length - 1  # the last slot of a full chunk is EOS
    chunks: list[list[Token]] = []
    chunk: list[Token] = [(special.start, 1.0)]
    for group in _token_groups(tokenize, text, skip_start=1):
        splittable = len(group) >= MAX_WORD_LENGTH
        while group:
            if len(chunk) + len(group) <= room:
                chunk.extend(group)
                break
            free = room - len(chunk)
            if splittable:
                chunk.extend(group[:free])
                group = group[free:]
            chunk.append((special.end, 1.0))
            chunk.extend([(special.pad, 1.0)] * (max_length - len(chunk)))
            chunks.append(chunk)
            chunk = [(special.start, 1.0)]
    chunk.append((special.end, 1.0))
    chunk.extend([(special.pad, 1.0)] * (max_length - len(chunk)))
    chunks.append(chunk)
    return chunks


def tokenize_t5(
    tokenize: TokenizeFn, text: str, *, min_length: int = T5_MIN_LENGTH, max_length: int | None = None
) -> list[Token]:
    """One sequence: tokens, EOS, pad 0 up to `min_length`.

    max_length None (ComfyUI): never truncated. Given (BFL / diffusers style, e.g. 512 for dev):
    tokens are cut so that tokens + EOS fit, and padding stops at max_length.
    """
    if max_length is not None and max_length < 1:
        raise ValueError(f"T5 max_length must be >= 1, got {max_length}")
    special = SpecialTokens.of(tokenize, has_start=False, pad_with_end=False)
    tokens = [t for group in _token_groups(tokenize, text, skip_start=0) for t in group]
    if max_length is not None:
        tokens = tokens[: max_length - 1]
        min_length = min(min_length, max_length)
    tokens.append((special.end, 1.0))
    tokens.extend([(special.pad, 1.0)] * (min_length - len(tokens)))
    return tokens


def empty_tokens(special: SpecialTokens, length: int) -> list[int]:
    """The "empty prompt" reference ComfyUI encodes to apply weights: [start,] end, pad... (length ids)."""
    ids = ([] if special.start is None else [special.start]) + [special.end]
    return ids + [special.pad] * (length - len(ids))
