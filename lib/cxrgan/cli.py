"""What every tool shares: commands built from config dataclasses, error handling, the rich console, progress
bars and summary tables."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import inspect
import os
import signal
import sys
import time
import typing
from pathlib import Path
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn, TransferSpeedColumn)
from rich.table import Table

from .errors import UserError
from .fileio import check_not_an_input, check_not_being_written, output_lock

console = Console(stderr=True)


def run(fn: Callable, name: str | None = None) -> None:
    """Run ``fn`` as a python-fire CLI. A UserError becomes one line on stderr and exit status 2."""
    import fire

    # SIGTERM (e.g. from `timeout` or a scheduler) unwinds like Ctrl-C, so temp files are cleaned up.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        argv = merge_repeated(fn, sys.argv[1:])
        check_flags(fn, argv)
        fire.Fire(fn, command=argv, name=name)
    except UserError as e:
        _fail(str(e))
    except OSError as e:  # the machine, not the program: disk full, permission denied, read-only file system, ...
        _fail(os_error_text(e))
    except (MemoryError, torch_out_of_memory()):
        _fail(OUT_OF_MEMORY)
    except RuntimeError as e:  # torch's CPU allocator and HDF5 report the machine's limits in plain RuntimeErrors
        if "can't allocate memory" in str(e):
            _fail(OUT_OF_MEMORY)
        if _errno_in_text(str(e)) is None:
            raise
        _fail(os_error_text(OSError(None, str(e).splitlines()[0])))
    except KeyboardInterrupt:
        console.print("[bold red]interrupted[/]: nothing was written at the output path")
        sys.exit(130)


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    sys.exit(2)


ERRNO_ADVICE = {
    errno.ENOSPC: "free some disk space or write elsewhere",
    errno.EDQUOT: "free some of your disk quota or write elsewhere",
    errno.EFBIG: "the file grew past a size limit (ulimit -f); raise it or write less",
    errno.EACCES: "check the permissions, or choose another path",
    errno.EPERM: "check the permissions, or choose another path",
    errno.EROFS: "that file system is read-only; choose a writable path",
}


OUT_OF_MEMORY = ("out of memory; ask for less at once (a smaller --n, --batch or image size) or use a machine with "
                 "more memory. Nothing was written at the output path")


def os_error_text(e: OSError) -> str:
    """One line for an operating-system failure, with what to do about it."""
    code = e.errno if e.errno is not None else _errno_in_text(str(e))  # h5py puts it in (long) text only
    if code in ERRNO_ADVICE:
        what = os.strerror(code)
    else:
        what = " ".join((e.strerror or str(e) or type(e).__name__).split())[:200]
    where = f": {e.filename}" if e.filename else ""
    advice = ERRNO_ADVICE.get(code, "check the path and the machine, then run again")
    return f"{what}{where}; {advice}. Nothing half-written was left at the output path"


def _errno_in_text(text: str) -> int | None:
    return next((c for c in ERRNO_ADVICE if os.strerror(c) in text), None)


def torch_out_of_memory() -> type:
    """torch's out-of-memory error (CUDA or CPU allocator), when torch is loaded; else a class nothing raises."""
    torch = sys.modules.get("torch")
    return getattr(torch, "OutOfMemoryError", MemoryError) if torch is not None else MemoryError


def command(config: type, body: Callable) -> Callable:
    """A python-fire command whose options are the fields of the dataclass ``config``: names, defaults and order
    are written once, in the dataclass. ``body(cfg, call_args)`` gets the config and the arguments as called
    (every option, defaults filled in, for the output's record); ``body``'s docstring is the command's help.
    """
    types = typing.get_type_hints(config)
    params = [inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=_field_default(f),
                                annotation=_without_none(types[f.name]))
              for f in dataclasses.fields(config)]
    signature = inspect.Signature(params)

    def run_command(*args, **kwargs):
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as e:
            raise UserError(f"{e}; see --help for the options") from None
        bound.apply_defaults()
        call_args = dict(bound.arguments)
        cfg = config(**call_args)
        with guarded_outputs(cfg):
            return body(cfg, call_args)

    run_command.__signature__ = signature
    run_command.__doc__ = body.__doc__
    run_command.__name__ = body.__name__
    run_command._config = config  # for the test that checks options against their dataclass
    return run_command


@contextlib.contextmanager
def guarded_outputs(cfg) -> Iterator[None]:
    """Before a command runs: no input may be one another run is writing now, none of its outputs may be one of
    its inputs, and each output is locked for the whole run (a second run writing the same output is refused). A
    config lists them in ``output_paths()`` and ``input_paths()`` ({flag: path or paths})."""
    outputs = cfg.output_paths() if hasattr(cfg, "output_paths") else {}
    inputs = cfg.input_paths() if hasattr(cfg, "input_paths") else {}
    # under torchrun, rank 0 holds the locks for every process
    main_process = int(os.environ.get("WORLD_SIZE", "1")) <= 1 or os.environ.get("RANK", "0") == "0"
    for flag, paths in inputs.items():
        for path in [paths] if isinstance(paths, (str, Path)) else paths or []:
            if path is not None:
                check_not_being_written(path, flag)
    with contextlib.ExitStack() as locks:
        for flag, out in ((f, p) for f, p in outputs.items() if p is not None):
            check_not_an_input(out, inputs, flag)
            if main_process:
                locks.enter_context(output_lock(str(out), flag))
        yield


def _without_none(annotation):
    """``int | None`` -> ``int`` (the help already shows ``Default: None``)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if len(args) == 1 and len(typing.get_args(annotation)) == 2 else annotation


def _field_default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        raise TypeError(f"{f.name}: a command's options need plain defaults, not default_factory")
    return inspect.Parameter.empty


REPEATABLE = "repeatable"  # a config field with metadata {REPEATABLE: True} may be given more than once


def repeatable_options(fn: Callable) -> set[str]:
    """The options of a command (cxrgan.cli.command) that may be given more than once."""
    config = getattr(fn, "_config", None)
    return {f.name for f in dataclasses.fields(config) if f.metadata.get(REPEATABLE)} if config else set()


def merge_repeated(fn: Callable, argv: list[str]) -> list[str]:
    """python-fire keeps only the last of a repeated flag: every occurrence of a repeatable option becomes one
    comma-separated value, at the place of the first (``--x a --x b`` -> ``--x=a,b``)."""
    names, out, values, i = repeatable_options(fn), [], {}, 0
    while i < len(argv):
        word = argv[i]
        if word == "--":  # what follows is for python-fire itself
            out += argv[i:]
            break
        name = word[2:].split("=", 1)[0].replace("-", "_") if word.startswith("--") else None
        has_value = "=" in word or (i + 1 < len(argv) and not argv[i + 1].startswith("--"))
        if name not in names or not has_value:
            out.append(word)
            i += 1
            continue
        value = word.split("=", 1)[1] if "=" in word else argv[i + 1]
        if name not in values:
            values[name] = []
            out.append((name,))  # where the merged option goes
        values[name].append(value)
        i += 1 if "=" in word else 2
    return [f"--{w[0].replace('_', '-')}={','.join(values[w[0]])}" if isinstance(w, tuple) else w for w in out]


def check_flags(fn: Callable, argv: list[str]) -> None:
    """Catch an unknown or missing flag before python-fire does, so the user gets one line instead of a usage page."""
    if any(a in ("-h", "--help", "--") for a in argv):
        return
    params = inspect.signature(fn).parameters
    known = {p.replace("_", "-") for p in params}
    flags = [a[2:].split("=", 1)[0].replace("_", "-") for a in argv if a.startswith("--")]
    for flag in flags:
        if flag not in known and not (flag.startswith("no") and flag[2:] in known):
            raise UserError(f"unknown option --{flag}; see --help for the options")
    positional, i = 0, 0
    while i < len(argv):  # count bare values that are not the value of a preceding --flag
        if argv[i].startswith("--"):
            i += 1 if "=" in argv[i] or i + 1 == len(argv) or argv[i + 1].startswith("--") else 2
        else:
            positional, i = positional + 1, i + 1
    required = [p for p, v in params.items() if v.default is inspect.Parameter.empty]
    missing = [p for p in required if p.replace("_", "-") not in flags]
    if len(missing) > positional:
        raise UserError(f"missing --{missing[-1].replace('_', '-')}; see --help for the options")


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


# ----------------------------------------------------------------------------------------------------------------
# Progress: one callback shape for every stage. A library function takes ``progress`` (default ``no_progress``),
# starts a task with ``task = progress(description, total)`` and reports with ``task(n)`` (n more items done),
# ``task(0, completed=k, total=t)`` (absolute, e.g. bytes of a download that restarted) and ``info="..."`` (free text
# shown at the end of the line; without it the bar shows the rate).

Task = Callable[..., None]  # task(advance=1, *, completed=None, total=None, info=None)
ProgressFn = Callable[..., Task]  # progress(description, total=None, completed=0) -> Task


def no_progress(description: str, total: int | None = None, completed: int = 0) -> Task:
    return ignore


def ignore(advance: int = 1, *, completed: int | None = None, total: int | None = None, info: str | None = None):
    """A task that reports nothing."""


@contextlib.contextmanager
def progress_bars(unit: str = "img/s", transfer: bool = False) -> Iterator[ProgressFn]:
    """Rich progress bars on stderr; yields a ``ProgressFn``. ``transfer``: byte counts and speeds (downloads)."""
    counts = [DownloadColumn(), TransferSpeedColumn()] if transfer else [MofNCompleteColumn()]
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), *counts, TimeElapsedColumn(),
                   TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console)

    def start(description: str, total: int | None = None, completed: int = 0) -> Task:
        if not bar.live.is_started:  # shown from the first task on: an error before it is just its own line
            bar.start()
        task = bar.add_task(description, total=total, completed=completed, info="")
        t0, done = time.perf_counter(), [completed, completed]  # [at start, now]

        def update(advance: int = 1, *, completed: int | None = None, total: int | None = None,
                   info: str | None = None) -> None:
            done[1] = completed if completed is not None else done[1] + advance
            if info is None and not transfer:
                info = rate_text(done[1] - done[0], time.perf_counter() - t0, unit)
            fields = {"total": total} if total is not None else {}
            bar.update(task, completed=done[1], info=info or "", **fields)

        return update

    try:
        yield start
    finally:
        if bar.live.is_started:
            bar.stop()


def rate_text(n: int, seconds: float, unit: str = "img/s") -> str:
    return f"{n / seconds:,.0f} {unit}" if seconds > 0 else ""


def counts_table(title: str, counts: dict[str, dict[str, int]], classes: list[str]) -> Table:
    """Per-split, per-class counts as a rich table with totals."""
    table = Table(title=title)
    table.add_column("split")
    for c in classes:
        table.add_column(c, justify="right")
    table.add_column("total", justify="right")
    for split, per_class in counts.items():
        row = [per_class.get(c, 0) for c in classes]
        table.add_row(split, *map(str, row), str(sum(row)))
    totals = [sum(pc.get(c, 0) for pc in counts.values()) for c in classes]
    table.add_row("[bold]all", *map(str, totals), str(sum(totals)))
    return table
