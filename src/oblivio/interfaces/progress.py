"""Progress of long work on the command line (entity forgets, bundles, benchmarks), drawn with
``rich`` on standard error; off when standard error is not a terminal or with ``--json``, so
pipes, logs and machine-readable output never carry it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from oblivio.node.forgetting import Progress as ProgressReport


@contextmanager
def progress_display(*, machine_output: bool = False) -> Iterator[ProgressReport | None]:
    """A progress report drawn on standard error while the block runs, one bar per stage;
    None (nothing drawn) when ``machine_output`` or when standard error is not a terminal."""
    if machine_output or not sys.stderr.isatty():
        yield None
        return
    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )
    stages: dict[str, TaskID] = {}

    def report(stage: str, done: int, total: int) -> None:
        if stage not in stages:
            stages[stage] = bars.add_task(stage, total=total)
        bars.update(stages[stage], completed=done, total=total)

    with bars:
        yield report
