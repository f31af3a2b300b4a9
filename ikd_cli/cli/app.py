"""The ``ikd`` application: the Typer app and its sub-apps, the root options, and the error
handler that turns every failure into one line. The commands live one per module beside this one
and register themselves on ``app`` (``ikd_cli.cli`` imports them all)."""

from __future__ import annotations

import functools

import typer

from ikd_cli.core.errors import IkdError

app = typer.Typer(
    name="ikd",
    help="IKD: Inconsistent Knowledge Distillation for object detection, on stock MMDetection.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
_state = {"debug": False}


def _first_line_of(err: BaseException) -> str:
    text = str(err).strip()
    # An IkdError raised inside a DataLoader worker comes back wrapped with the worker's
    # traceback; the user only needs its own message, which is the last line.
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        return last.split("IkdError: ", 1)[-1]
    return text.splitlines()[0] if text else err.__class__.__name__


INTERRUPTED = ("[bold yellow]interrupted[/]: finished outputs are complete; run the same command again "
               "to continue")


def _interrupted(err: BaseException) -> bool:
    """Ctrl-C, also when a library wrapped it (torch.save turns it into a RuntimeError)."""
    while err is not None:
        if isinstance(err, KeyboardInterrupt):
            return True
        err = err.__cause__ or err.__context__
    return False


def _fail(message: str, code: int, interrupted: bool = False):
    """Print one line and exit ``code``. Under ``--gpus N`` the line goes to the launching
    command instead, which prints the first process's error once."""
    from ikd_cli.core.distributed import record_error
    from ikd_cli.core.ui import console

    from rich.markup import escape

    if not record_error(message, code, interrupted=interrupted):
        # escaped: a message quotes file names and values ("[x, y, w, h]"), which rich would
        # otherwise take for markup and drop
        console.print(INTERRUPTED if interrupted else f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def handle_errors(func):
    """Turn expected failures into one line and a non-zero exit (``--debug`` re-raises)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return _run_releasing_locks(func, *args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except BaseException as err:  # every failure ends in one line, whatever its type
            if _state["debug"]:
                raise
            if _interrupted(err):
                _fail("interrupted", 130, interrupted=True)
            if isinstance(err, IkdError):
                _fail(_first_line_of(err), err.exit_code)
            if isinstance(err, MemoryError):
                _fail("out of memory; try a smaller --batch-size", 1)
            if isinstance(err, OSError):
                where = f" ({err.filename})" if getattr(err, "filename", None) else ""
                _fail(f"{err.strerror or err}{where}", 1)
            if not isinstance(err, Exception):
                raise
            # a bug or an input we did not foresee: still one line
            _fail(f"{err.__class__.__name__}: {_first_line_of(err)} (run with --debug for the traceback)", 1)

    return wrapper


def _run_releasing_locks(func, *args, **kwargs):
    """Run a command; the folder locks it took (:mod:`ikd_cli.core.lock`) end with it, whatever
    the outcome (imported only once a command has taken one: ``--help`` stays light)."""
    import sys

    try:
        return func(*args, **kwargs)
    finally:
        lock = sys.modules.get("ikd_cli.core.lock")
        if lock is not None:
            lock.release_all()


def _print_version(value: bool) -> None:
    """``ikd --version``: an eager option's own callback, so it answers before click asks for a
    command (a plain option of the group's callback is only read once a command is given)."""
    if value:
        from ikd_cli import __version__

        typer.echo(f"ikd {__version__}")
        raise typer.Exit()


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
          version: bool = typer.Option(False, "--version", help="Print the version and exit.",
                                       is_eager=True, callback=_print_version)):
    _state["debug"] = debug
    _silence_import_notices()


def _silence_import_notices() -> None:
    """Notices that say nothing about the user's run: mmcv's 'MMCV 2.0 is coming' and torch's
    'no CUDA runtime' on CPU machines (on every import), and mmdet's advice to rewrite its own
    test pipeline when ikd evaluates in batches (ikd makes that replacement itself), and
    setuptools' notice on imagecorruptions' import of pkg_resources. Cheap:
    imports nothing."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", message="On January 1, 2023, MMCV will release")
    warnings.filterwarnings("ignore", message='"ImageToTensor" pipeline is replaced')
    # imagecorruptions (which mmdet imports when it is installed) imports pkg_resources
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


def debugging() -> bool:
    return _state["debug"]


def main() -> None:
    app()
