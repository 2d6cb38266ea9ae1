"""Where the plugin's words go: rich on a terminal, plain lines otherwise.

On a terminal (stdout is a tty) tables are rich tables and a disk copy is a rich progress
bar. Anywhere else (a pipe, a file, CI) every output is a plain line: no bars, no colour,
no cursor movement, one line per change, so logs and ``grep`` read it as it happened.
Errors always go to stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn
from rich.table import Table

from vmresize.operator.cli.views import eta_seconds, human_bytes, human_seconds

#: Phases in which the copy runs or has just ended (its last progress comes with Finishing).
COPYING = ("Migrating", "Finishing")


class Out:
    """The plugin's output: :attr:`tty` chooses rich or plain lines."""

    def __init__(self, tty: bool | None = None) -> None:
        self.tty = sys.stdout.isatty() if tty is None else tty
        self.console = Console(highlight=False) if self.tty else None
        self.err = Console(stderr=True, highlight=False) if self.tty else None

    def line(self, text: str, style: str = "") -> None:
        """One line of output; ``style`` (rich markup style) only on a terminal."""
        if self.console is not None:
            self.console.print(text, style=style or None, markup=False)
        else:
            print(text, flush=True)

    def error(self, text: str) -> None:
        """An error for people, on stderr."""
        if self.err is not None:
            self.err.print(f"error: {text}", style="bold red", markup=False)
        else:
            print(f"error: {text}", file=sys.stderr, flush=True)

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        """Rows under headers, aligned like ``kubectl get`` (a rich table on a terminal)."""
        if self.console is not None:
            t = Table(box=None, pad_edge=False, header_style="bold")
            for h in headers:
                t.add_column(h.upper())
            for r in rows:
                t.add_row(*r)
            self.console.print(t)
            return
        cells = [[h.upper() for h in headers], *[list(r) for r in rows]]
        widths = [max(len(c[i]) for c in cells) for i in range(len(headers))]
        for c in cells:
            print("   ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)).rstrip(),
                  flush=True)

    def copy_progress(self) -> CopyProgress:
        """A display of the disk copy, used as a context manager."""
        return CopyProgress(self)


class CopyProgress:
    """The disk copy as it goes: a live bar on a terminal, a line per change otherwise.

    Bytes, rate and ETA are the agent's own measurements from the VMResize status (not
    rich's estimate from our update times, which follow the operator's status writes).
    """

    def __init__(self, out: Out) -> None:
        self.out = out
        self.bar: Progress | None = None
        self.task: TaskID | None = None
        self.last: tuple[int, int] | None = None

    def __enter__(self) -> CopyProgress:
        if self.out.console is not None:
            self.bar = Progress(
                TextColumn("[bold]{task.description:<13}"), BarColumn(), TaskProgressColumn(),
                TextColumn("{task.fields[amount]}"), TextColumn("{task.fields[rate]}"),
                TextColumn("ETA {task.fields[eta]}"),
                console=self.out.console, refresh_per_second=4)
            self.bar.__enter__()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.bar is not None:
            self.bar.__exit__(t, e, tb)

    def say(self, text: str) -> None:
        """A line above the bar (or a plain line)."""
        if self.bar is not None:
            self.bar.console.print(text, markup=False, highlight=False)
        else:
            print(text, flush=True)

    def update(self, phase: str, done: int, total: int, rate: int) -> None:
        """Show the phase and the copy's bytes done of total at ``rate`` bytes/s."""
        if phase not in COPYING and self.task is None:
            return   # the copy ended before we looked: the summary says what it took
        eta = eta_seconds(done, total, rate)
        eta_text = human_seconds(eta) if eta is not None and done < total else "-"
        amount = f"{human_bytes(done)}/{human_bytes(total)}" if total else ""
        speed = f"{human_bytes(rate)}/s" if rate else ""
        if self.bar is not None:
            if self.task is None and total:
                self.task = self.bar.add_task(phase, total=total, amount="", rate="", eta="-")
            if self.task is not None:
                self.bar.update(self.task, description=phase, completed=done, total=total,
                                amount=amount, rate=speed, eta=eta_text)
            return
        if total and (done, total) != self.last:
            pct = min(100, done * 100 // total)
            print(f"progress {pct}% {amount}" + (f" at {speed}" if speed else "")
                  + (f", ETA {eta_text}" if eta_text != "-" else ""), flush=True)
            self.last = (done, total)
