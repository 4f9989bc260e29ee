"""Training stage: the per-epoch progress bar, drawn by tqdm.auto (terminals, notebooks).

tqdm decides how to draw: a text bar redrawn in place on a terminal (ASCII where the stream
cannot encode its block characters, as under TERM=dumb consoles), a widget in Jupyter when
ipywidgets is installed. Into a pipe or a file (CI logs, `2> log`) no bar is drawn and the
loop's one line per epoch is all there is, unless ``progress="always"``.
"""
from __future__ import annotations

import sys
from importlib.util import find_spec
from typing import Any, TextIO


def in_notebook() -> bool:
    """True inside a Jupyter kernel (whose stderr is not a terminal, yet shows a bar)."""
    ipython = sys.modules.get("IPython")
    try:
        return "IPKernelApp" in ipython.get_ipython().config  # type: ignore[union-attr]
    except Exception:  # noqa: BLE001 - no IPython, or a plain IPython shell
        return False


def epoch_bar(examples: int, done: int, label: str, progress: bool | str,
              stream: TextIO | None = None) -> Any | None:
    """A bar over the epoch's ``examples`` (``done`` of them already, after a resume), or None
    when ``progress`` is False. ``progress=True`` draws only on a terminal or in a notebook;
    "always" draws into any stream."""
    if not progress or find_spec("tqdm") is None:  # a declared dependency; an environment
        return None  # set up before it was one trains on with its one line per epoch
    from tqdm.auto import tqdm

    always = progress == "always" or in_notebook()
    return tqdm(total=examples, initial=done, desc=label, unit="ex",
                file=stream if stream is not None else sys.stderr, leave=False,
                disable=False if always else None, mininterval=0.1, dynamic_ncols=True)


def show(bar: Any, examples: int, loss: float, acc: float, lr: float) -> None:
    """Advance ``bar`` by ``examples`` with the running loss, accuracy and learning rate."""
    bar.set_postfix_str(f"loss {loss:.3g}  acc {acc:.3g}  lr {lr:.2e}", refresh=False)
    bar.update(examples)
