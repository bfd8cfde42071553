"""`claimscope` command line: thin commands over the library API.

Every command that reads user input reports bad input as one line on stderr and a
non-zero exit code, never a traceback. Commands live in `data`, `modelcmd` and `service`;
this module holds the app and what they share.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(help="ClaimScope: streaming fraud detection for health-insurance claims.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
err = Console(stderr=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one clear line on stderr; raise the returned Exit."""
    err.print(f"[red]error:[/red] {message}", highlight=False, markup=True, soft_wrap=True)
    return typer.Exit(code)


def open_input(path: str):
    if path == "-":
        return sys.stdin
    try:
        return Path(path).open(encoding="utf-8", errors="surrogateescape")
    except OSError as e:
        raise fail(f"cannot read {path}: {e.strerror}") from None


def read_input(path: str) -> bytes:
    """A whole file (or stdin) as bytes, for inputs converted at once (FHIR, X12)."""
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise fail(f"cannot read {path}: {e.strerror}") from None


def claim_id_of(line: str) -> str:
    """` (claim_id X)` when a bad line still names its claim, for error messages."""
    try:
        cid = json.loads(line).get("claim_id")
    except (ValueError, AttributeError):
        return ""
    return f" (claim_id {cid})" if isinstance(cid, str) else ""
