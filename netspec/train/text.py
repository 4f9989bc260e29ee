"""Training stage: a plain text file as a character-level language-modelling data set.

Characters are the tokens: the vocabulary is the sorted set of characters of the file, and a
token id is a character's index in it (the Dataset's `classes` hold the code points, so a
checkpoint can turn ids back into text). The text is split by position, not at random:
the first part trains, the next validates, the last tests, so no window of one split overlaps
another. Each example is a window of `context` characters x and the same window shifted by
one, y: the model predicts every next character (per-token cross-entropy).

With `offset = "random"` (the default) the training windows are cut again at the start of
every epoch, all shifted by one offset in 0..context-1 drawn from the run's seed and the
epoch (`epoch_offset`): each epoch sees other windows of the same text, as char-rnn and
nanoGPT sample windows at random positions, and the window count (so the steps per epoch)
stays the same. `offset = "fixed"` keeps the windows at 0, T, 2T, ... every epoch. Validation
and test windows never move.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from netspec.train.data import DataError, Dataset

MAX_TEXT_BYTES = 64 << 20  # a larger "text" is a mistake (or a binary file)


def read_text(path: str | Path) -> str:
    """The file as text (UTF-8), refusing what is not a readable, bounded text file."""
    p = Path(path)
    if not p.is_file():
        raise DataError(p, "no such file")
    size = p.stat().st_size
    if size > MAX_TEXT_BYTES:
        raise DataError(p, f"{size:,} bytes is more than the {MAX_TEXT_BYTES >> 20} MB a text "
                           "data set may have")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(p, f"not UTF-8 text (byte {e.start}: {e.reason})") from None


def vocabulary(text: str) -> list[int]:
    """The sorted code points of the characters in text."""
    return sorted({ord(ch) for ch in text})


def encode(text: str, vocab: list[int]) -> np.ndarray:
    """Token ids of text's characters; every character must be in vocab."""
    index = {cp: i for i, cp in enumerate(vocab)}
    missing = sorted({ch for ch in text if ord(ch) not in index})
    if missing:
        raise ValueError("characters outside the vocabulary: "
                         + ", ".join(repr(ch) for ch in missing[:10]))
    return np.fromiter((index[ord(ch)] for ch in text), dtype=np.int64, count=len(text))


def decode(ids, vocab: list[int]) -> str:
    return "".join(chr(vocab[int(i)]) for i in ids)


def windows(ids: np.ndarray, context: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping windows: x = ids[s:s+T], y = ids[s+1:s+T+1] for s = 0, T, 2T, ..."""
    n = (len(ids) - 1) // context
    if n < 1:
        return np.zeros((0, context), np.int64), np.zeros((0, context), np.int64)
    x = ids[: n * context].reshape(n, context)
    y = ids[1: n * context + 1].reshape(n, context)
    return x, y


def epoch_offset(seed: int, epoch: int, context: int) -> int:
    """The shift of epoch `epoch`'s training windows: a draw in 0..context-1 from its own
    stream of (seed, epoch), so a resumed run cuts the same windows without saving them."""
    return int(np.random.default_rng([seed, epoch, 0x7E47]).integers(context))


def shifted_windows(ids: np.ndarray, context: int, n: int, offset: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """n windows starting at offset, offset + T, ...: x = ids[s:s+T], y = ids[s+1:s+T+1]."""
    return windows(ids[offset: offset + n * context + 1], context)


class RandomOffsets:
    """Dataset.recut of a text: epoch e's training windows shifted by epoch_offset(seed, e).

    The count is the one every offset allows, (len - context) // context windows, so an
    epoch has the same steps whatever its offset."""

    def __init__(self, ids: np.ndarray, context: int, limit: int | None):
        self.ids, self.context = ids, context
        self.n = (len(ids) - context) // context
        if limit:
            self.n = min(self.n, limit)

    def __call__(self, seed: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        return shifted_windows(self.ids, self.context, self.n,
                               epoch_offset(seed, epoch, self.context))


OFFSETS = ("random", "fixed")


def load_text(path: str, context: int, val: float = 0.1, test: float = 0.1,
              limit: int | None = None, offset: str = "random") -> Dataset:
    """A Dataset of (N, context) windows from a text file, split by position; `limit`: at
    most that many training windows (the first); `offset`: "random" cuts the training
    windows at a new seeded offset every epoch (Dataset.recut), "fixed" never moves them."""
    if offset not in OFFSETS:
        raise ValueError(f"offset must be one of {', '.join(OFFSETS)}, not {offset!r}")
    text = read_text(path)
    vocab = vocabulary(text)
    ids = encode(text, vocab)
    n_val, n_test = int(len(ids) * val), int(len(ids) * test)
    n_train = len(ids) - n_val - n_test
    bounds = [0, n_train, n_train + n_val, len(ids)]
    splits = [windows(ids[a:b], context) for a, b in itertools.pairwise(bounds)]
    if len(splits[0][0]) == 0:
        raise DataError(path, f"{len(text)} characters give no training window of "
                              f"{context + 1} characters")
    (xt, yt), (xv, yv), (xs, ys) = splits
    recut = None
    if offset == "random" and n_train > 2 * context:
        recut = RandomOffsets(ids[:n_train], context, limit)
        xt, yt = shifted_windows(ids[:n_train], context, recut.n, 0)
    elif limit:
        xt, yt = xt[:limit], yt[:limit]
    return Dataset(xt, yt, xv, yv, xs, ys, num_classes=len(vocab), input_shape=(context,),
                   classes=vocab, name=Path(path).name, recut=recut)


def next_token_distribution(model, ids: list[int], temperature: float = 1.0,
                            top_k: int | None = None) -> np.ndarray:
    """P(next token | ids) from a causal language model over a fixed context of T tokens;
    temperature 0 puts all of it on the likeliest token (greedy decoding).

    The last T ids fill the window from the left; a shorter prompt is padded on the right
    and the scores are read at its last position. That is exact for causal models (a causal
    attention or a forward recurrence never looks at the later, padded steps).
    """
    context = model.input_shape[0]
    window = list(ids[-context:])
    pos = len(window) - 1
    x = np.zeros((1, context), np.int64)
    x[0, : len(window)] = window
    scores = model.forward(x)[0, pos].astype(np.float64)
    if temperature == 0:  # the limit of ever lower temperatures: the likeliest token
        p = np.zeros_like(scores)
        p[int(np.argmax(scores))] = 1.0
        return p
    scores = scores / temperature
    if top_k is not None and top_k < len(scores):
        cutoff = np.partition(scores, -top_k)[-top_k]
        scores = np.where(scores >= cutoff, scores, -np.inf)
    p = np.exp(scores - scores.max())
    return p / p.sum()


def generate(model, vocab: list[int], prompt: str, length: int, temperature: float = 1.0,
             top_k: int | None = None, seed: int = 0) -> str:
    """prompt followed by `length` characters sampled one at a time from the model
    (temperature 0: each the likeliest one, greedy decoding)."""
    if not prompt:
        raise ValueError("the prompt is empty; give at least one character")
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0 (0: greedy), not {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top-k must be at least 1, not {top_k}")
    ids = list(encode(prompt, vocab))
    rng = np.random.default_rng(seed)
    for _ in range(length):
        p = next_token_distribution(model, ids, temperature, top_k)
        ids.append(int(rng.choice(len(p), p=p)))
    return decode(ids, vocab)
