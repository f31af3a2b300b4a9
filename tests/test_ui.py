"""The terminal: ``quiet_to_log`` sends a run's chatter to its log file and puts everything back."""

from __future__ import annotations

import logging
import os
import sys
import warnings

from ikd_cli.core.ui import quiet_to_log, terminal


def _state():
    loggers = {name: (lg.handlers[:], lg.level, lg.propagate)
               for name, lg in ((n, logging.getLogger(n)) for n in ("mmcv", "mmdet", "py.warnings", None))}
    from mmcv.utils import progressbar

    return loggers, progressbar.ProgressBar.__init__.__defaults__, os.fstat(2).st_ino, sys.stdout, sys.stderr


def test_quiet_to_log_sends_chatter_to_the_file_and_restores_everything(tmp_path, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)  # rank 0 logs INFO
    before = _state()
    with quiet_to_log(tmp_path / "logs" / "run.log") as path:
        print("a stray print")
        print("a stray error", file=sys.stderr)
        logging.getLogger("mmdet").info("mmdet says hello")
        warnings.warn("a python warning")
        sys.stderr.flush()
        os.write(2, b"a C library line\n")
        assert terminal.stream is not None  # the console still reaches the terminal
    text = path.read_text()
    for line in ("a stray print", "a stray error", "mmdet says hello", "a python warning", "a C library line"):
        assert line in text, (line, text)
    assert terminal.stream is None
    assert _state() == before
    with quiet_to_log(tmp_path / "verbose.log", verbose=True) as none:
        assert none is None
    assert not (tmp_path / "verbose.log").exists()
