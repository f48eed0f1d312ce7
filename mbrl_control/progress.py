"""Progress bars for long offline work (``mbrl-control train``, the benchmarks): tqdm on stderr, so
stdout stays the table and the closing JSON line. Never in a node: a control tick pays for nothing.

The core's long loops (``train_ensemble``, ``train_mbpo``) take a ``progress(done, total, figures)``
callback and know nothing of bars; ``follow(bar)`` is that callback for a bar.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

from tqdm import tqdm

# Where stderr is a file or a pipe (a log, CI), a bar that redraws itself is noise: one line this often.
LOG_INTERVAL_S = 30.0


def progress_bar(iterable: Any = None, **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr; redrawn as usual on a terminal, at most every ``LOG_INTERVAL_S``
    seconds elsewhere."""
    interactive = sys.stderr.isatty()
    kwargs.setdefault("mininterval", 0.1 if interactive else LOG_INTERVAL_S)
    kwargs.setdefault("dynamic_ncols", interactive)
    return tqdm(iterable, file=sys.stderr, **kwargs)


def follow(bar: tqdm) -> Callable[[int, int, dict[str, float]], None]:
    """A core ``progress(done, total, figures)`` callback that moves ``bar`` to ``done`` of
    ``total`` and shows ``figures`` beside it."""

    def progress(done: int, total: int, figures: dict[str, float]) -> None:
        bar.total = total
        bar.set_postfix({k: f"{v:.4g}" if isinstance(v, float) else v for k, v in figures.items()}, refresh=False)
        bar.update(done - bar.n)

    return progress


def note(text: str) -> None:
    """A line on stderr that does not tear a running bar."""
    tqdm.write(text, file=sys.stderr)
