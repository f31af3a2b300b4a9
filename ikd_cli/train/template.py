"""The one template every training command follows (``ikd train``, ``ikd distill``, the backdoor
victim and its defences): open the session, build the config, continue or start the run in its
work dir, say what it does, train with MMDetection's chatter in the log, say where the result is.
Each command passes only what differs: a :class:`Run`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from rich.markup import escape

from ikd_cli.config.layout import LATEST, LOG_FILE
from ikd_cli.core.errors import IkdError
from ikd_cli.train.session import FINISHED, TrainingSession, replaced


@dataclass
class Run:
    """What one training command does differently.

    ``build()`` makes the mmcv Config (called once the session has made and checked the data);
    ``run_info`` is what ``run.json`` records and a continued run must match; ``announce(session,
    cfg)`` is the line said before training; ``hooks(session, cfg)`` the extra (hook, priority)
    pairs, built inside the log (their loaders may print); ``result`` the file the run leaves."""
    preset: dict
    build: Callable[[], object]
    run_info: dict
    title: str
    role: str  # the checkpoints' meta ikd_role: teacher, student or distill
    announce: Callable[[TrainingSession, object], str]
    result: str = LATEST
    counts: Optional[Callable[[str], bool]] = None  # which preset keys the run depends on (None: all)
    hooks: Callable[[TrainingSession, object], list] = field(default=lambda session, cfg: [])
    find_unused: bool = False
    done: Optional[Callable[[Path], str]] = None  # the closing line's "where" (default: the result)
    session: dict = field(default_factory=dict)  # more TrainingSession options (distill: skip_bad)


def run(spec: Run, *, device: str | None, launcher: str, verbose: bool, restart: bool = False,
        must_resume: bool = False, work_dir: Path | None = None) -> Path:
    """Train (or continue, or find finished) the run ``spec`` describes; returns its result file.
    ``must_resume`` insists on continuing (``ikd resume``, ``ikd train --resume``); ``work_dir``
    replaces the config's run folder (``ikd resume DIR`` continues DIR, not the folder its saved
    preset names)."""
    session = TrainingSession(spec.preset, device=device, launcher=launcher, **spec.session)
    cfg = spec.build()
    if work_dir is not None:
        cfg.work_dir = str(work_dir)
    work_dir, resume_from = session.prepare(cfg, spec.run_info, restart=restart, counts=spec.counts)
    result = work_dir / spec.result
    if must_resume and resume_from is None:
        raise IkdError(f"nothing to resume in {work_dir} (no {LATEST})")
    if resume_from == FINISHED:
        return result
    for line in replaced(cfg):  # nothing of the model config's recipe replaced without a word (also in run.json)
        session.say(f"[yellow]note[/]: {escape(line)}")
    session.say(f"{spec.announce(session, cfg)}; log: {work_dir / LOG_FILE}")
    with session.log_to(work_dir, verbose):
        session.train(cfg, resume_from=resume_from, title=spec.title, find_unused=spec.find_unused,
                      extra_hooks=spec.hooks(session, cfg), meta=dict(ikd_preset=spec.preset, ikd_role=spec.role))
    session.done(spec.done(work_dir) if spec.done else str(result))
    return result
