"""Progress bars on a terminal (rich) for index runs, shared by the CLI and the benchmark."""

from __future__ import annotations

from typing import Self

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)


class RichReporter:
    """Progress bars for the index stages that know their size (an indexing ``Reporter``)."""

    def __init__(
        self,
        console: Console,
        *,
        enabled: bool = True,
        label: str = "{task.description:>8}",
        extra: tuple[ProgressColumn, ...] = (),
    ) -> None:
        self._enabled = enabled
        self._progress = Progress(
            TextColumn(label),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            *extra,
            console=console,
            transient=False,
        )
        self._bars: dict[str, TaskID] = {}

    def __enter__(self) -> Self:
        if self._enabled:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._enabled:
            self._progress.stop()

    def start(self, stage: str, total: int | None) -> None:
        if total and self._enabled:
            self._bars[stage] = self._progress.add_task(stage, total=total)

    def advance(self, stage: str, n: int = 1) -> None:
        if stage in self._bars:
            self._progress.advance(self._bars[stage], n)

    def finish(self, stage: str) -> None:
        pass
