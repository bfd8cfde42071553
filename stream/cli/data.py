"""Data commands: the claim contract and synthetic claims."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from pydantic import ValidationError

from model.claims import claim_json_schema, describe_errors, parse_claim
from model.generator import PATTERNS, ClaimGenerator
from model.progress import progress_bar
from stream.cli.common import app, claim_id_of, fail, open_input


@app.command()
def schema() -> None:
    """Print the claim contract as JSON Schema."""
    print(json.dumps(claim_json_schema(), indent=2))


@app.command()
def validate(path: Annotated[str, typer.Argument(help="JSONL file of claims, or - for stdin")]
             ) -> None:
    """Check claims against the contract: one line per invalid claim, then a summary.

    Exits 1 when any claim is invalid, 0 otherwise.
    """
    total = bad = 0
    with open_input(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            total += 1
            try:
                parse_claim(line.encode("utf-8", errors="surrogateescape"))
            except ValidationError as e:
                bad += 1
                print(f"line {lineno}{claim_id_of(line)}: " + "; ".join(describe_errors(e)))
    print(f"{total} claims: {total - bad} valid, {bad} invalid")
    raise typer.Exit(1 if bad else 0)


@app.command()
def generate(
    count: Annotated[int, typer.Option(min=1, help="claims to write")] = 1000,
    fraud_rate: Annotated[float, typer.Option(min=0.0, max=1.0, help="share of fraud")] = 0.05,
    seed: Annotated[int, typer.Option(help="same seed, same claims")] = 0,
    patterns: Annotated[str, typer.Option(help="comma-separated subset of: "
                                          + ", ".join(PATTERNS))] = ",".join(PATTERNS),
    labels: Annotated[bool, typer.Option(help='write {"claim": ..., "fraud_pattern": ..., '
                                          '"variant": ...}')] = False,
    oov_rate: Annotated[float, typer.Option(min=0.0, max=1.0, help="share of diagnoses "
                                            "replaced by unlisted ICD-10-CM siblings")] = 0.1,
    label_noise: Annotated[float, typer.Option(min=0.0, max=1.0, help="share of wrong labels "
                                               "(with --labels)")] = 0.0,
) -> None:
    """Write synthetic claims as JSONL on stdout (progress on stderr for long runs)."""
    chosen = tuple(p.strip() for p in patterns.split(",") if p.strip())
    try:
        gen = ClaimGenerator(seed=seed, fraud_rate=fraud_rate, patterns=chosen, size=count,
                             oov_rate=oov_rate, label_noise=label_noise)
    except ValueError as e:
        raise fail(str(e)) from None
    dumps, out, buf = json.dumps, sys.stdout, []
    with progress_bar("generating", total=count, enabled=count >= 50_000) as advance:
        for item in gen.generate(count):
            buf.append(dumps({"claim": item.claim, "fraud_pattern": item.fraud_pattern,
                              **({"variant": item.variant} if item.variant else {})}
                             if labels else item.claim))
            if len(buf) == 2000:
                out.write("\n".join(buf) + "\n")
                advance(len(buf))
                buf.clear()
        if buf:
            out.write("\n".join(buf) + "\n")
            advance(len(buf))


