"""``ikd report --keep DIR``: copy what the report read, and nothing heavier, into ``DIR``.

Weights and detections are megabytes a run; the files the report reads (the run's settings,
mmcv's logs, the eval and robustness summaries) are kilobytes. Kept in a folder that outlives the
machine (a repository, say), they let ``ikd report DIR`` redraw the same tables and pictures
after the work dirs are gone, and let a study that runs over several sessions (or machines) be
reported as one. A kept folder is a record, not a run: it holds no checkpoint, so nothing can
resume from it. Only finished runs are kept: a run still training would leave a log that its
later launches, kept again, would be read together with.
"""

from __future__ import annotations

from pathlib import Path

from ikd_cli.config.layout import (LOG_FILE, LOG_JSON_GLOB, PRESET_FILE, RUN_FILE, STUDY_FILE, detections_suffix,
                                   eval_file_name, robustness_file_name)
from ikd_cli.core.fileio import copy_file, ensure_writable_dir, refuse_inside

# What report/runs.py reads from a run folder. Detections (``*.bbox.json``) and evaluation logs
# are left behind: the report never opens them, and they are most of an eval's bytes.
_RECORD_GLOBS = (RUN_FILE, PRESET_FILE, LOG_FILE, LOG_JSON_GLOB, eval_file_name("*", "*"), robustness_file_name("*", "*"))
_LEFT_BEHIND = (detections_suffix("bbox"),)


def record_files(folder: Path) -> list[Path]:
    """The files of one run folder that the report reads."""
    found = {p for pattern in _RECORD_GLOBS for p in folder.glob(pattern)
             if p.is_file() and not p.name.endswith(_LEFT_BEHIND)}
    return sorted(found)


def check_keep(paths: list[Path], dest: Path) -> None:
    """Refuse a records folder inside the runs it copies (a second report would copy it again)."""
    refuse_inside(dest, paths, "runs")


def keep_records(paths: list[Path], run_folders: list[Path], dest: Path) -> int:
    """Copy the record files of ``run_folders`` into ``dest``, each at its place below the
    ``paths`` argument that holds it (under that argument's name when several were given), with
    the study marker of each argument. Returns the number of files copied; each is written to a
    temporary name and renamed, so an interrupted copy leaves whole files only."""
    check_keep(paths, dest)
    roots = [Path(p).resolve() for p in paths]
    dest = Path(dest)
    ensure_writable_dir(dest, "records folder")
    copied = 0
    for root in roots:
        base = root if root.is_dir() and not (root / RUN_FILE).is_file() else root.parent
        target = dest / root.name if len(roots) > 1 else dest
        if (base / STUDY_FILE).is_file():  # the study's arms are named by it
            copy_file(base / STUDY_FILE, target / STUDY_FILE)
            copied += 1
        for folder in run_folders:
            if folder == base or base in folder.parents:
                kept = target / folder.relative_to(base)
                files = record_files(folder)
                for path in files:
                    copy_file(path, kept / path.name)
                    copied += 1
                # a run kept before and trained again since: its old logs would read as launches
                # of this one, so the run's records are replaced whole
                names = {path.name for path in files}
                for old in record_files(kept) if kept.is_dir() else []:
                    if old.name not in names:
                        old.unlink()
    return copied

