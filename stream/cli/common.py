"""`claimscope` command line: thin commands over the library API.

Every command that reads user input reports bad input as one line on stderr and a
non-zero exit code, never a traceback. Commands live in `data`, `modelcmd` and `service`;
this module holds the app and what they share.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import BinaryIO

import typer
from rich.console import Console

app = typer.Typer(help="ClaimScope: streaming fraud detection for health-insurance claims.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
err = Console(stderr=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one clear line on stderr; raise the returned Exit."""
    err.print(f"[red]error:[/red] {message}", highlight=False, markup=True, soft_wrap=True)
    return typer.Exit(code)


def open_input(path: str) -> BinaryIO:
    """A file (or stdin, for -) opened for bytes: claims are parsed from UTF-8 bytes."""
    if path == "-":
        return sys.stdin.buffer
    try:
        return Path(path).open("rb")
    except OSError as e:
        raise fail(f"cannot read {path}: {e.strerror}") from None
