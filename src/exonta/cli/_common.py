"""Shared CLI plumbing: error handling, progress bars, acquisition flags."""

from __future__ import annotations

import functools
import os
import sys
from typing import Any, Callable

import typer

from ..errors import ExontaCancelled, ExontaInputError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def one_line(message: Any) -> str:
    """``message`` as one printable line: newlines, tabs, escape sequences and other control
    characters (e.g. echoed from a user's file) are shown escaped (``\\n``, ``\\x1b``)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(message)).strip()


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    """Print one clear line on stderr and exit."""
    typer.echo(f"exonta: error: {one_line(message)}", err=True)
    raise typer.Exit(code)


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn ExontaInputError into one stderr line + exit 2; never show a traceback to users.

    Set ``EXONTA_DEBUG=1`` to see the traceback of an unexpected error.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except typer.Exit:
            raise
        except ExontaInputError as exc:
            fail(str(exc), EXIT_BAD_INPUT)
        except ExontaCancelled:
            fail("cancelled", EXIT_FAILED)
        except KeyboardInterrupt:
            typer.echo("exonta: interrupted", err=True)
            raise typer.Exit(130) from None
        except MemoryError:
            fail("out of memory: analyse a shorter video or reduce --chunk-frames", EXIT_FAILED)
        except Exception as exc:  # noqa: BLE001 - last line of defence for users
            if os.environ.get("EXONTA_DEBUG"):
                raise
            fail(f"internal error ({type(exc).__name__}: {exc}); please report it "
                 f"(run with EXONTA_DEBUG=1 to see the traceback)", EXIT_FAILED)

    return wrapper


def acquisition_flags(pixel_size_um, fps, exposure_s, temperature_c, viscosity_mpas, dilution) -> dict[str, Any]:
    """Collect the acquisition CLI flags that were given."""
    vals = {"pixel_size_um": pixel_size_um, "fps": fps, "exposure_s": exposure_s, "temperature_c": temperature_c,
            "viscosity_mpas": viscosity_mpas, "dilution": dilution}
    return {k: v for k, v in vals.items() if v is not None}


class RichProgress:
    """A rich progress bar on stderr usable as an exonta progress callback (no-op when not a TTY and quiet)."""

    def __init__(self, description: str, total: int = 1000, enabled: bool = True):
        self.description = description
        self.total = total
        self.enabled = enabled
        self._progress = None
        self._task = None

    def __enter__(self) -> "RichProgress":
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                                      TimeElapsedColumn(), TimeRemainingColumn(),
                                      console=Console(stderr=True), transient=True)
            self._progress.__enter__()
            self._task = self._progress.add_task(self.description, total=self.total)
        return self

    def __call__(self, done: int, total: int, stage: str) -> bool:
        if self._progress is not None:
            self._progress.update(self._task, completed=done, total=total,
                                  description=f"{self.description} [{stage}]")
        return True

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)


def stderr_is_tty() -> bool:
    return sys.stderr.isatty()
