"""Exception types shared by every part of exonta.

One exception type carries every *bad input* problem (missing file, corrupt
video, missing or nonsensical metadata, unknown config key ...).  Its message is
one sentence a lab user can act on; the CLI prints it and exits with code 2.
"""

from __future__ import annotations

__all__ = ["ExontaInputError", "ExontaCancelled"]


class ExontaInputError(ValueError):
    """Bad input: the message says what is wrong and how to fix it."""


class ExontaCancelled(RuntimeError):
    """Raised inside the pipeline when a progress callback asks to stop."""
