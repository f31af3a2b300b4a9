"""Terminal output: one rich console, the standard progress bar, and the switch that sends
MMDetection's and mmcv's initialisation chatter to the run's log file instead of the terminal."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Iterator

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.text import Text

from ikd_cli.core.fileio import open_append


class _Terminal:
    """A file-like object that writes to whatever stream was the terminal when the quiet
    section began (or the current ``sys.stdout`` outside one), so rich keeps printing to the
    user while ``sys.stdout`` itself is redirected into the log file."""

    def __init__(self) -> None:
        self.stream = None

    def _target(self):
        return self.stream if self.stream is not None else sys.stdout

    def write(self, text: str) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        self._target().flush()

    def isatty(self) -> bool:
        return bool(getattr(self._target(), "isatty", lambda: False)())

    def fileno(self) -> int:
        return self._target().fileno()

    @property
    def encoding(self) -> str:
        return getattr(self._target(), "encoding", "utf-8") or "utf-8"


terminal = _Terminal()
console = Console(file=terminal, highlight=False)


class RateColumn(ProgressColumn):
    """Items per second, with the unit of the task (``it/s``, ``img/s``)."""

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        unit = task.fields.get("unit", "it")
        if speed is None:
            return Text(f"-- {unit}/s", style="progress.data.speed")
        return Text(f"{speed:.2f} {unit}/s", style="progress.data.speed")


def progress_bar(transient: bool = False, disable: bool = False) -> Progress:
    """The one progress bar every long command uses: what, bar, done/total, %, rate, elapsed, ETA,
    and a free ``info`` field (losses, current file)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=transient,
        disable=disable,
    )


_CHATTY_LOGGERS = ("mmcv", "mmdet", "py.warnings", "root")


@contextlib.contextmanager
def quiet_to_log(log_file: str | os.PathLike | None, verbose: bool = False) -> Iterator[Path | None]:
    """Send mmcv/mmdet logging, stray prints (pycocotools prints) and warnings to ``log_file``.

    With ``verbose`` (or no log file) nothing is redirected. The rich console keeps writing to
    the real terminal throughout.
    """
    if verbose or log_file is None:
        yield None
        return
    log_path = Path(log_file)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open_append(log_path) as log_stream, _loggers_to(log_path), \
            _console_and_warnings(), _mmcv_bars_to(log_stream), _fd2_to(log_stream), \
            contextlib.redirect_stdout(log_stream), contextlib.redirect_stderr(log_stream), \
            warnings.catch_warnings():
        warnings.simplefilter("default")
        yield log_path


@contextlib.contextmanager
def _loggers_to(log_path: Path) -> Iterator[None]:
    """The chatty loggers write to ``log_path`` alone, for the block; then as they were."""
    # mmcv's get_logger() adds a stream handler to a logger it has not seen; marking the names as
    # initialised first keeps them on our file handler alone.
    from mmcv.utils import logging as mmcv_logging

    handler = logging.FileHandler(log_path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s"))
    saved = {}
    for name in _CHATTY_LOGGERS:
        logger = logging.getLogger(name if name != "root" else None)
        saved[name] = (logger.handlers[:], logger.level, logger.propagate)
        logger.handlers = [handler]
        # As mmcv does: only rank 0 logs INFO; the other ranks of a torchrun job log errors only.
        logger.setLevel(logging.INFO if int(os.environ.get("RANK", 0)) == 0 else logging.ERROR)
        logger.propagate = False
        if name in ("mmcv", "mmdet"):
            mmcv_logging.logger_initialized[name] = True
    try:
        yield
    finally:
        for name, (handlers, level, propagate) in saved.items():
            logger = logging.getLogger(name if name != "root" else None)
            logger.handlers, logger.level, logger.propagate = handlers, level, propagate
        handler.close()


@contextlib.contextmanager
def _console_and_warnings() -> Iterator[None]:
    """The console keeps the real terminal (sys.stdout before the redirect); warnings go through
    logging (the log file)."""
    terminal.stream = sys.stdout
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        terminal.stream = None


@contextlib.contextmanager
def _mmcv_bars_to(log_stream) -> Iterator[None]:
    # mmcv's ProgressBar (used by mmdet's test loops inside evaluation hooks) binds sys.stdout as
    # a default argument at import time, so redirecting sys.stdout does not reach it.
    from mmcv.utils import progressbar

    bar_defaults = progressbar.ProgressBar.__init__.__defaults__
    progressbar.ProgressBar.__init__.__defaults__ = bar_defaults[:-1] + (log_stream,)
    try:
        yield
    finally:
        progressbar.ProgressBar.__init__.__defaults__ = bar_defaults


@contextlib.contextmanager
def _fd2_to(log_stream) -> Iterator[None]:
    # C libraries (libjpeg's "Corrupt JPEG data" warnings, mmcv's ops) write to file descriptor 2
    # directly, past sys.stderr: point the descriptor at the log too (DataLoader workers inherit
    # it), so such a line never lands in the middle of the user's terminal.
    sys.stderr.flush()
    saved_fd2 = os.dup(2)
    os.dup2(log_stream.fileno(), 2)
    try:
        yield
    finally:
        log_stream.flush()
        os.dup2(saved_fd2, 2)
        os.close(saved_fd2)
