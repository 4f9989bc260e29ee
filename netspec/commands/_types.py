"""Command-line value types: each checks one flag's value as argparse reads it, so a bad
value is a usage error naming the flag (exit 2) before any work starts."""
from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def integer(low: int, what: str) -> Callable[[str], int]:
    """An integer >= low; `what` completes "must be ..." in the error."""
    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"must be {what}, not {text!r}")
        return value
    parse.__name__ = what  # argparse names the type in some messages
    return parse


def real(low: float, what: str, *, low_open: bool = False,
         high: float | None = None) -> Callable[[str], float]:
    """A finite number >= low (> low when low_open), < high when given."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        ok = math.isfinite(value) and (value > low if low_open else value >= low)
        if not ok or (high is not None and value >= high):
            raise argparse.ArgumentTypeError(f"must be {what}, not {text!r}")
        return value
    parse.__name__ = what
    return parse


positive_int = integer(1, "a positive integer")
non_negative_int = integer(0, "an integer >= 0")
positive = real(0, "a positive number", low_open=True)
non_negative = real(0, "a number >= 0")
fraction = real(0, "a fraction in [0, 1)", high=1)


def int_list(low: int, what: str) -> Callable[[str], list[int]]:
    """Comma-separated integers >= low, at least one, none repeated: "3,5,8"."""
    def parse(text: str) -> list[int]:
        items = [t.strip() for t in text.split(",")]
        values = []
        for item in items:
            try:
                values.append(int(item))
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"must be comma-separated {what}, e.g. 3,5,8; {item!r} is not one"
                    if item else f"must be comma-separated {what}, e.g. 3,5,8, not {text!r}"
                ) from None
        bad = [v for v in values if v < low]
        if bad:
            raise argparse.ArgumentTypeError(f"must be {what}; {bad[0]} is not")
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise argparse.ArgumentTypeError(f"lists {repeated[0]} twice")
        return values
    parse.__name__ = what
    return parse


labels = int_list(0, "labels >= 0")
k_values = int_list(1, "positive integers")


def assignment(text: str) -> str:
    """NAME=VALUE, checked for its form here; the value is read later (parse_value)."""
    name, eq, _ = text.partition("=")
    if not eq or not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return text
