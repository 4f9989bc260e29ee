"""Training stage: a dependency-free progress bar on stderr (throttled, quiet off a terminal)."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TextIO


@dataclass
class ProgressBar:
    """``update(done, samples, loss=..., acc=..., lr=...)`` redraws at most every ``interval`` s.

    Draws only when ``stream`` is a terminal, unless ``force`` (e.g. ``--progress always``).
    """

    total: int
    label: str = ""
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    force: bool = False
    interval: float = 0.1
    width: int = 24
    started: float = field(default_factory=time.perf_counter)
    last_draw: float = -1.0

    @property
    def enabled(self) -> bool:
        return self.force or bool(getattr(self.stream, "isatty", lambda: False)())

    def update(self, done: int, samples: int, *, final: bool = False, **values: float) -> None:
        now = time.perf_counter()
        if not self.enabled or (not final and now - self.last_draw < self.interval):
            return
        self.last_draw = now
        elapsed = max(now - self.started, 1e-9)
        filled = int(self.width * done / max(self.total, 1))
        eta = elapsed / max(done, 1) * (self.total - done)
        shown = "  ".join(f"{k} {v:.3g}" if k != "lr" else f"lr {v:.2e}" for k, v in values.items())
        line = (f"\r{self.label} [{'#' * filled}{'.' * (self.width - filled)}] "
                f"{done}/{self.total}  {shown}  {samples / elapsed:,.0f} ex/s  eta {eta:.0f}s")
        self.stream.write(line + ("\n" if final else "\x1b[K"))
        self.stream.flush()

    def close(self, done: int, samples: int, **values: float) -> None:
        self.update(done, samples, final=True, **values)
