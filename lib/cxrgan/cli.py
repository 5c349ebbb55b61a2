"""What every tool shares: error handling, the rich console, progress bars and summary tables."""

from __future__ import annotations

import inspect
import signal
import sys
from typing import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .errors import UserError

console = Console(stderr=True)


def run(fn: Callable, name: str | None = None) -> None:
    """Run ``fn`` as a python-fire CLI. A UserError becomes one line on stderr and exit status 2."""
    import fire

    # SIGTERM (e.g. from `timeout` or a scheduler) unwinds like Ctrl-C, so temp files are cleaned up.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        check_flags(fn, sys.argv[1:])
        fire.Fire(fn, name=name)
    except UserError as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[bold red]interrupted[/]: nothing was written at the output path")
        sys.exit(130)


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


def progress() -> Progress:
    """A progress bar with count, rate (items/s) and time left."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def progress_info() -> Progress:
    """A progress bar whose last column is free text (losses, rates), set with ``update(task, info=...)``."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
    )


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
