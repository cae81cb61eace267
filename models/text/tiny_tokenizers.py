"""Small tokenizers trained on the spot, in the real files' formats, for tiny random-weight encoders.

CLIP: byte-level BPE with CLIP's `</w>` end-of-word suffix, written as `vocab.json` + `merges.txt`
(ids: 256 byte symbols, the same with `</w>`, merges in order, then `<|startoftext|>` and
`<|endoftext|>` last, exactly as CLIP lays out its 49408 ids). T5: a SentencePiece unigram
`spiece.model` with pad 0, `</s>` 1, `<unk>` 2 and no BOS. Both are deterministic: the corpus is
generated from fixed word lists, BPE merges break count ties by the pair's text, and SentencePiece
trains single-threaded without shuffling.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import sentencepiece as spm
from transformers import CLIPTokenizer

from .clip import CLIP_TINY
from .t5 import T5_TINY

CLIP_TINY_MERGES = CLIP_TINY.vocab_size - 2 * 256 - 2
T5_TINY_PIECES = 400  # + 100 <extra_id_*> added by the T5 tokenizer = 500 ids <= T5_TINY.vocab_size
T5_EXTRA_IDS = 100
BOS, EOS = "<|startoftext|>", "<|endoftext|>"

_WORDS = """a an the of in on at by with and or under over near behind inside above below from to for is are
cat dog fox owl wolf bear deer rabbit tiger lion horse bird eagle fish whale dragon robot knight wizard witch
queen king girl boy woman man child astronaut samurai pirate sailor monk dancer musician painter farmer soldier
castle lighthouse mountain river forest city garden village bridge tower lake ocean desert island valley cave
temple church street market harbor station library kitchen bedroom cafe tavern ruins palace cottage cabin
portrait landscape cityscape still life close up wide shot aerial view macro photograph photo painting
illustration sketch drawing render watercolor oil acrylic pastel charcoal anime manga pixel art cartoon comic
red orange yellow green blue purple pink brown black white gray silver golden crimson teal violet turquoise
ancient futuristic tiny huge cozy dark bright misty snowy sunny rainy foggy stormy detailed cinematic vintage
colorful glowing wooden glass stone metal marble neon rusty shiny soft sharp blurry dreamy moody epic serene
sunset sunrise night morning evening winter summer autumn spring twilight midnight noon dawn dusk
light lighting shadow reflection volumetric rim backlight studio natural hour bokeh depth field lens camera
film grain polaroid hdr highly ultra realistic photorealistic masterpiece best quality trending intricate
elegant beautiful holding wearing sitting standing walking running flying swimming reading smiling looking
hat coat dress armor sword shield book lantern umbrella flower tree leaf cloud rain snow fire water smoke""".split()
_SYLLABLES = "ka lo mi ne ru ta shi vo ze pa qu ix br ol en ar th st gr fl".split()


def tiny_corpus(lines: int = 3000) -> list[str]:
    """Deterministic prompt-like sentences: word-list walks, pseudo-words, digits, weights, capitals."""
    n = len(_WORDS)
    # pangrams first, so every ASCII letter and digit is in both vocabularies
    out = [
        "The quick brown fox jumps over the lazy dog 0123456789.",
        "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG!",
    ]
    for i in range(lines):
        words = [_WORDS[(i * 7 + j * 13 + (i // n) * 3) % n] for j in range(6 + i % 9)]
        if i % 4 == 0:
            words[0] = words[0].capitalize()
        pseudo = _SYLLABLES[i % 20] + _SYLLABLES[(i // 20) % 20] + _SYLLABLES[(i * 3) % 20]
        out.append(" ".join(words) + f", {pseudo} {i % 1000}, ({words[-1]}:1.{i % 10}) #{i % 37}! It's OK?")
    return out


def byte_symbols() -> list[str]:
    """The 256 printable stand-ins for bytes 0..255 used by byte-level BPE, in CLIP's vocabulary order.

    Printable Latin-1 bytes stand for themselves; the rest map to code points 256 and up.
    """
    direct = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    kept = set(direct)
    others = [b for b in range(256) if b not in kept]
    return [chr(b) for b in direct] + [chr(256 + i) for i in range(len(others))]


def learn_bpe_merges(words: Counter[str], n_merges: int) -> list[tuple[str, str]]:
    """Classic BPE: repeatedly merge the most frequent adjacent pair (ties: smallest pair text)."""
    vocab = Counter({tuple(w[:-1]) + (w[-1] + "</w>",): c for w, c in words.items() if w})
    merges: list[tuple[str, str]] = []
    while len(merges) < n_merges:
        pairs: Counter[tuple[str, str]] = Counter()
        for symbols, count in vocab.items():
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] += count
        if not pairs:
            raise ValueError(f"corpus too small: only {len(merges)} of {n_merges} BPE merges possible")
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        merged: Counter[tuple[str, ...]] = Counter()
        for symbols, count in vocab.items():
            out, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            merged[tuple(out)] += count
        vocab = merged
    return merges


def write_tiny_clip_tokenizer(folder: Path) -> list[Path]:
    """Train and write a CLIP_TINY-sized BPE tokenizer (vocab.json, merges.txt, configs) into `folder`."""
    base = byte_symbols()
    # CLIP's own normalizer + pre-tokenizer (lowercase, regex split, byte-level) turn text into words
    pipeline = CLIPTokenizer(vocab={**{s: i for i, s in enumerate(base)}, BOS: 256, EOS: 257}, merges=[])
    backend = pipeline.backend_tokenizer
    words: Counter[str] = Counter()
    for line in tiny_corpus():
        normalized = backend.normalizer.normalize_str(line)
        words.update(w for w, _ in backend.pre_tokenizer.pre_tokenize_str(normalized))
    merges = learn_bpe_merges(words, CLIP_TINY_MERGES)
    tokens = base + [s + "</w>" for s in base] + [a + b for a, b in merges] + [BOS, EOS]
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != CLIP_TINY.vocab_size or vocab[EOS] != CLIP_TINY.eos_token_id:
        raise AssertionError(
            f"tiny CLIP vocab has {len(vocab)} ids, EOS {vocab.get(EOS)}; expected {CLIP_TINY}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "model_max_length": 77,
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": EOS,
        "unk_token": EOS,
        "do_lower_case": True,
        "tokenizer_class": "CLIPTokenizer",
    }
    files = {
        "vocab.json": json.dumps(vocab, ensure_ascii=False),
        "merges.txt": "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
        "tokenizer_config.json": json.dumps(config, indent=2),
        "special_tokens_map.json": json.dumps(
            {k: config[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token")}, indent=2
        ),
    }
    return [_write(folder / name, text.encode("utf-8")) for name, text in files.items()]


def write_tiny_t5_tokenizer(folder: Path) -> list[Path]:
    """Train and write a small SentencePiece unigram T5 tokenizer (spiece.model + configs) into `folder`."""
    if T5_TINY_PIECES + T5_EXTRA_IDS > T5_TINY.vocab_size:
        raise AssertionError(f"tiny T5 tokenizer ids exceed T5_TINY.vocab_size {T5_TINY.vocab_size}")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(tiny_corpus()),
        model_writer=model,
        vocab_size=T5_TINY_PIECES,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        pad_piece="<pad>",
        eos_piece="</s>",
        unk_piece="<unk>",
        character_coverage=1.0,
        num_threads=1,
        shuffle_input_sentence=False,
        minloglevel=2,
    )
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "eos_token": "</s>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "extra_ids": T5_EXTRA_IDS,
        "model_max_length": 512,
        "tokenizer_class": "T5Tokenizer",
    }
    special = {k: config[k] for k in ("eos_token", "pad_token", "unk_token")}
    return [
        _write(folder / "spiece.model", model.getvalue()),
        _write(folder / "tokenizer_config.json", json.dumps(config, indent=2).encode()),
        _write(folder / "special_tokens_map.json", json.dumps(special, indent=2).encode()),
    ]


def write_tiny_tokenizers(models_dir: Path) -> list[Path]:
    """Write tiny CLIP and T5 tokenizers to `<models_dir>/tokenizers/{clip_l,t5xxl}/`; returns the files."""
    root = Path(models_dir) / "tokenizers"
    return write_tiny_clip_tokenizer(root / "clip_l") + write_tiny_t5_tokenizer(root / "t5xxl")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
