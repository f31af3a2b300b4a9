"""The attack's files, written off the attack's path: while batch k+1 is attacked, a background
thread encodes batch k's images, writes each atomically and then appends its record.

What a kill or Ctrl-C leaves is what the synchronous loop left: each file is renamed into place
whole (:func:`ikd_cli.core.fileio.atomic_write_bytes`) before its record is written and flushed,
so a record always names a complete file and at most one file (the one being written when a
kill -9 came) has no record yet; a re-run redoes it. On Ctrl-C or any error of the attack, the
thread finishes the image it is writing (no temporary file is left) and the queued ones are
dropped: their records were never written, so a re-run attacks them again.

The queue is bounded (``depth`` batches), so a slow disk holds the attack back instead of
filling memory. The heavy parts (zlib, sha256, PNG encoding, the write and its fsync) release
the GIL, so the thread runs beside torch's compute, not after it.
"""

from __future__ import annotations

import json
import queue
import threading
from pathlib import Path

from ikd_cli.attack.storage import encode_adversarial, pixel_digest
from ikd_cli.config.layout import adversarial_name
from ikd_cli.core.errors import IkdError
from ikd_cli.core.fileio import atomic_write_bytes, open_append, unlinked

_DONE = object()  # the last job: no more batches
_POLL_S = 0.1  # how often a blocked put or get looks whether the other side has stopped


class SetWriter:
    """A context manager: ``save(items, results)`` queues a batch of attacked images, ``fail(items)``
    records images that could not be read. The first error of the writing thread is raised in
    the caller's thread, at its next call or on leaving the ``with``: the run stops there."""

    def __init__(self, out_dir: Path, records_path: Path, eps: float, fmt: str, depth: int = 2):
        self.out_dir, self.records_path, self.eps, self.fmt = Path(out_dir), Path(records_path), eps, fmt
        self._jobs: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()  # set by the caller on Ctrl-C or an error: finish the current image, go
        self._error: BaseException | None = None
        # Not a daemon: the interpreter waits for the image being written, so none is left half-done.
        self._thread = threading.Thread(target=self._run, name="ikd-attack-writer")

    def __enter__(self) -> SetWriter:
        self._records = open_append(self.records_path)
        self._thread.start()
        return self

    def save(self, items: list[dict], results: list) -> None:
        """Queue attacked images (the loader's items, :class:`~ikd_cli.attack.batch.AttackedImage`
        each) to be written; blocks while ``depth`` batches wait already."""
        self._put(("save", items, results))

    def fail(self, items: list[dict]) -> None:
        """Queue the records of images that could not be read (``item['error']`` says why)."""
        if items:
            self._put(("fail", items, None))

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is None:
                self._put(_DONE)  # everything queued is written before the run goes on
                self._thread.join()
        finally:
            # Ctrl-C (also one during the join above) or an error: only the image being written is
            # finished, then the records are closed (never under the thread's feet).
            self._stop.set()
            self._thread.join()
            self._records.close()
        if exc_type is None:
            self._raise_error()
        return False

    def _put(self, job) -> None:
        while True:
            self._raise_error()
            if not self._thread.is_alive():
                self._raise_error()  # it may have stopped on an error since the first look
                raise RuntimeError("the attack's writing thread stopped")  # never without an error: a bug
            try:
                self._jobs.put(job, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    job = self._jobs.get(timeout=_POLL_S)
                except queue.Empty:
                    continue
                if job is _DONE:
                    return
                kind, items, results = job
                if kind == "fail":
                    self._write_failures(items)
                else:
                    self._write_images(items, results)
        except BaseException as err:  # noqa: B036  (handed to the caller's thread, which raises it)
            self._error = err

    def _write_images(self, items: list[dict], results: list) -> None:
        for item, result in zip(items, results):
            if self._stop.is_set():
                return
            rel = adversarial_name(item["name"], self.fmt)
            atomic_write_bytes(unlinked(self.out_dir, rel, "image file name"),
                               encode_adversarial(item["img"], result.pixels, self.eps, self.fmt, name=item["name"]))
            # after the rename, never before: a record always names a complete file
            self._record({"image": item["name"], "out": str(rel), "source": pixel_digest(item["img"]),
                          "loss_before": result.loss_before, "loss_after": result.loss_after,
                          "linf": result.linf, "seconds": round(result.seconds, 4)})

    def _write_failures(self, items: list[dict]) -> None:
        for item in items:
            self._record({"image": item["name"], "error": item["error"]})

    def _record(self, record: dict) -> None:
        try:
            self._records.write(json.dumps(record) + "\n")
            self._records.flush()  # each image's record on its own: a kill loses at most the one being written
        except OSError as err:
            raise IkdError(f"cannot write {self.records_path}: {err.strerror or err}") from err
