"""Training stage: algorithmic sequence tasks generated in the process (no file, no download).

`copy` and `sort` give a language model something checkable to learn. An example is the
text "d1..dn=a1..an" of n random digits, "=", and the answer: the same digits (copy) or
the digits in ascending order (sort). The tokens are its characters, so the vocabulary is
"0123456789=" (ids 0-9 the digits, 10 the "="), and every example is trained like a text
window: x = seq[:-1], y = seq[1:] (T = 2n positions), per-token cross-entropy.

The prompt digits are random, so no model predicts them better than chance; what is learnt
is the answer. ``exact_sequences`` scores that the honest way: it gives the model only the
prompt "d1..dn=" and decodes the n answer digits greedily, one at a time, each from the
model's own previous outputs, and counts the sequences that come out exactly right.

Sequences are drawn without replacement from the 10^n possible ones with ``split_seed``
and dealt to the train, validation and test splits, so no test sequence was ever trained on.
"""
from __future__ import annotations

import numpy as np

from netspec.train.data import DataError, Dataset

TASKS = ("copy", "sort")
SEPARATOR = "="
ALPHABET = "0123456789" + SEPARATOR  # sorted by code point: the id of a character is its index
MAX_LENGTH = 18  # 10^18 sequences still fit an int64


def answer(kind: str, digits: np.ndarray) -> np.ndarray:
    """The answer part of each row of ``digits`` (N, n) for task ``kind``."""
    return np.sort(digits, axis=1) if kind == "sort" else digits.copy()


def draw_digits(count: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` distinct rows of ``length`` random digits (N, n), in random order."""
    codes = rng.choice(10 ** length, size=count, replace=False)
    powers = 10 ** np.arange(length - 1, -1, -1, dtype=np.int64)
    return (codes[:, None] // powers) % 10


def sequences(kind: str, digits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Next-token pairs (x, y), each (N, 2n), of the texts "digits=answer"."""
    sep = np.full((len(digits), 1), ALPHABET.index(SEPARATOR), np.int64)
    seq = np.concatenate([digits, sep, answer(kind, digits)], axis=1).astype(np.int64)
    return seq[:, :-1], seq[:, 1:]


def check_task(kind: str, length: int, examples: int, val: float, test: float) -> None:
    where = f"data = {kind}"
    if kind not in TASKS:
        raise DataError(where, f"no task '{kind}'; the tasks are {', '.join(TASKS)}")
    if not 1 <= length <= MAX_LENGTH:
        raise DataError(where, f"length {length}: a task's sequences have 1 to "
                               f"{MAX_LENGTH} digits")
    total = examples + round(examples * val) + round(examples * test)
    if total > 10 ** length:
        raise DataError(where, f"{total:,} distinct sequences of {length} digits are asked "
                               f"for (examples, val and test); there are only {10 ** length:,}: "
                               "ask for fewer (data.examples) or longer ones")


def make_task(kind: str, length: int, examples: int = 20_000, val: float = 0.1,
              test: float = 0.2, seed: int = 0) -> Dataset:
    """A Dataset for ``kind`` ("copy" or "sort") with sequences of ``length`` digits:
    ``examples`` training sequences, and ``val`` and ``test`` times as many (distinct ones)
    for validation and test; drawn with ``seed``."""
    check_task(kind, length, examples, val, test)
    sizes = [examples, round(examples * val), round(examples * test)]
    digits = draw_digits(sum(sizes), length, np.random.default_rng(seed))
    cuts = np.cumsum(sizes)[:-1]
    (xt, yt), (xv, yv), (xs, ys) = (sequences(kind, part) for part in np.split(digits, cuts))
    return Dataset(xt, yt, xv, yv, xs, ys, num_classes=len(ALPHABET),
                   input_shape=(2 * length,), classes=[ord(c) for c in ALPHABET],
                   name=f"{kind}{length}")


def length_for(input_shape: tuple[int, ...], kind: str) -> int:
    """The digits per sequence a token input [T] fits: T = 2n."""
    if len(input_shape) != 1 or input_shape[0] < 2 or input_shape[0] % 2:
        raise DataError(f"data = {kind}", f"a task needs a token input [T] with T = 2 x the "
                                          f"digits per sequence; the spec's input is "
                                          f"{list(input_shape)}")
    return input_shape[0] // 2


def task_of(data: Dataset) -> str | None:
    """"copy"/"sort" for a Dataset made by make_task, else None."""
    kind = data.name.rstrip("0123456789")
    return kind if kind in TASKS and data.classes == [ord(c) for c in ALPHABET] else None


def greedy_answers(model, x: np.ndarray, batch: int = 500) -> np.ndarray:
    """The answers (N, n) the model writes after each prompt "d1..dn=" of x, greedily.

    Only the prompt is given: answer position k is filled with the model's own choice at
    step k before step k + 1 is read (positions not yet written hold 0)."""
    n = x.shape[1] // 2
    out = np.zeros((len(x), n), np.int64)
    for start in range(0, len(x), batch):
        seq = np.zeros((min(batch, len(x) - start), 2 * n), np.int64)
        seq[:, : n + 1] = x[start:start + batch, : n + 1]
        for k in range(n):
            choice = np.asarray(model.forward(seq, train=False))[:, n + k].argmax(axis=-1)
            out[start:start + len(seq), k] = choice
            if n + k + 1 < 2 * n:
                seq[:, n + k + 1] = choice
    return out


def exact_sequences(model, data: Dataset, split: str = "test") -> dict:
    """{"exact": fraction of the split's sequences whose greedy answer is exactly right,
    "n": how many}: the task's real score (per-token accuracy also counts the random
    prompt digits, which no model can predict)."""
    x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
    n = x.shape[1] // 2
    exact = np.all(greedy_answers(model, x) == y[:, n:], axis=1)  # y[:, n:]: the answer
    return {"exact": float(exact.mean()) if len(exact) else float("nan"), "n": len(exact)}
