"""Data commands: the claim contract and synthetic claims."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from model.claims import Claim, Format, claim_json_schema
from model.formats import (
    ConversionError,
    ReferenceDataError,
    References,
    claim_json,
    read,
    to_fhir,
    to_x12,
)
from model.formats.report import corpus_report
from model.generator import PATTERNS, ClaimGenerator
from model.progress import progress_bar
from model.schemes import SCHEME_SHARE, ProviderWorld, provider_labels_json
from stream.cli.common import app, err, fail, open_input

FormatOption = Annotated[Format, typer.Option(
    "--format", help="claim (contract JSONL), fhir (a FHIR R4 resource, Bundle or NDJSON) "
    "or x12 (one 837P interchange)")]
ReferencesOption = Annotated[list[str] | None, typer.Option(
    "--references", help="FHIR Patient/Practitioner/PractitionerRole/Organization resources "
    "(NDJSON, Bundle, JSON array) or CSV (id,birth_date,sex or npi,taxonomy): what FHIR "
    "claims refer to but do not carry, and X12 claims' provider taxonomies (by NPI) and "
    "members without DMG; repeatable")]
SHOWN_PROBLEMS = 10  # reference records skipped: the first few, then a count


@contextmanager
def claims_in(fmt: Format, path: str, references: list[str] | None = None
              ) -> Iterator[Iterator[Claim | ConversionError]]:
    """The claims of a file (or stdin) in `fmt`, in order, each bad record as an error.
    A record that is not a claim to score (a prior authorisation) is noted on stderr and
    left out: neither a claim nor a failure. `references`: files of reference data (FHIR
    and X12); an unreadable one fails the command, a bad record in one is noted."""
    refs = _references(fmt, references) if references else None
    with open_input(path) as f:
        yield (item for item in read(fmt, f, refs) if not _noted(item))


def _references(fmt: Format, paths: list[str]) -> References:
    if fmt == "claim":
        raise fail("--references is read with FHIR and X12 input (contract JSON carries its "
                   "member and provider in the claim)")
    return load_references(paths)


def load_references(paths: Sequence[str | Path]) -> References:
    """Reference data files read, each record that was skipped noted on stderr (the first
    SHOWN_PROBLEMS, then a count); a file that cannot be read fails the command."""
    try:
        refs = References.load(paths)
    except ReferenceDataError as e:
        raise fail(f"references: {e}") from None
    for problem in refs.problems[:SHOWN_PROBLEMS]:
        err.print(f"references: skipped {problem}", highlight=False, markup=False,
                  soft_wrap=True)
    if len(refs.problems) > SHOWN_PROBLEMS:
        err.print(f"references: {len(refs.problems) - SHOWN_PROBLEMS} more records skipped",
                  highlight=False, markup=False, soft_wrap=True)
    return refs


def _noted(item: Claim | ConversionError) -> bool:
    if isinstance(item, ConversionError) and item.skipped:
        err.print(str(item), highlight=False, markup=False, soft_wrap=True)
        return True
    return False


@app.command()
def schema() -> None:
    """Print the claim contract as JSON Schema."""
    print(json.dumps(claim_json_schema(), indent=2))


@app.command(name="convert")
def convert_command(
    path: Annotated[str, typer.Argument(help="FHIR or X12 file, or - for stdin; with "
                                        "--report a directory of them too")],
    from_: Annotated[Format | None, typer.Option(
        "--from", help="fhir, x12 or claim (contract JSONL, written back in its canonical "
        "form); required unless --report, which tells FHIR from X12 by content")] = None,
    references: ReferencesOption = None,
    report: Annotated[bool, typer.Option(
        "--report", help="convert every file under PATH and print, per source (its first "
        "directory), records converted, skipped and failed, and the failures' reasons "
        "grouped; no claims are written")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="the --report as JSON")] = False,
) -> None:
    """Convert FHIR R4 Claims/ExplanationOfBenefits or an X12 837P interchange to contract
    JSONL on stdout; each record that fails goes to stderr with its index and path.

    Exits 1 when any record failed (the others are still written), 0 otherwise. With
    --report: exits 0 once the report is written, whatever it counts.
    """
    if report:
        _report(Path(path), from_, references or [], as_json)
        return
    if as_json:
        raise fail("--json goes with --report")
    if from_ is None:
        raise fail("--from is required (fhir, x12 or claim) unless --report")
    bad = 0
    with claims_in(from_, path, references) as items:
        for item in items:
            if isinstance(item, ConversionError):
                bad += 1
                err.print(str(item), highlight=False, markup=False, soft_wrap=True)
            else:
                sys.stdout.write(claim_json(item) + "\n")
    raise typer.Exit(1 if bad else 0)


def _report(root: Path, fmt: Format | None, references: list[str], as_json: bool) -> None:
    """`convert --report`: the corpus report (model.formats.report) as a table or JSON."""
    if not root.exists():
        raise fail(f"{root}: no such file or directory")
    if fmt == "claim":
        raise fail("--report reads FHIR and X12 files (--from fhir or x12, or leave it out)")
    try:
        rep = corpus_report(root, fmt, [Path(p) for p in references])
    except ReferenceDataError as e:
        raise fail(f"references: {e}") from None
    rows = {**rep.sources, "all": rep.total}
    if as_json:
        print(json.dumps({name: {**s.to_json(), "converted_share": s.converted_share}
                          for name, s in rows.items()}, indent=2))
        return
    print("| source | files | other resources | records | converted | skipped | failed "
          "| converted of claims |")
    print("|---|---|---|---|---|---|---|---|")
    for name, s in rows.items():
        share = f"{s.converted_share:.0%}" if s.converted_share is not None else "-"
        print(f"| {name} | {s.files} | {s.other_files} | {s.records} | {s.converted} | "
              f"{s.skipped} | {s.failed} | {share} |")
    for name, s in rep.sources.items():
        if s.reasons or s.reference_problems:
            print(f"\n{name}:")
        for reason, n in s.reasons.items():
            print(f"  {n:5d}  {reason}  (e.g. {s.examples[reason]})")
        for problem in s.reference_problems[:SHOWN_PROBLEMS]:
            print(f"  references: skipped {problem}")


@app.command()
def validate(path: Annotated[str, typer.Argument(help="claims file, or - for stdin")],
             fmt: FormatOption = "claim", references: ReferencesOption = None) -> None:
    """Check claims against the contract: one line per invalid claim, then a summary.

    Exits 1 when any claim is invalid, 0 otherwise.
    """
    total = bad = 0
    with claims_in(fmt, path, references) as items:
        for item in items:
            total += 1
            if isinstance(item, ConversionError):
                bad += 1
                print(str(item))
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
    fmt: Annotated[Format, typer.Option("--format", help="claim (contract JSONL), fhir (NDJSON, "
                                     "one FHIR R4 Claim a line) or x12 (one 837P "
                                     "interchange)")] = "claim",
    scheme_share: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="share of providers running a billing scheme (model/schemes.py); "
        "0: the single-claim stream alone, providers as many as before")] = SCHEME_SHARE,
    provider_labels: Annotated[Path | None, typer.Option(
        help="also write each provider's scheme, intensity and honest-outlier kind here "
        "(JSON)")] = None,
) -> None:
    """Write synthetic claims on stdout (progress on stderr for long runs): the generator's
    stream, with a share of providers working billing schemes beside honest outliers."""
    chosen = tuple(p.strip() for p in patterns.split(",") if p.strip())
    if provider_labels is not None and not scheme_share:
        raise fail("--provider-labels needs a world with schemes (--scheme-share > 0)")
    try:
        if scheme_share:
            if label_noise:
                raise ValueError("--label-noise is for the single-claim stream "
                                 "(--scheme-share 0)")
            world = ProviderWorld(seed=seed, fraud_rate=fraud_rate, patterns=chosen, size=count,
                                  oov_rate=oov_rate, scheme_share=scheme_share)
            gen: ClaimGenerator | ProviderWorld = world
        else:
            gen = ClaimGenerator(seed=seed, fraud_rate=fraud_rate, patterns=chosen, size=count,
                                 oov_rate=oov_rate, label_noise=label_noise)
    except ValueError as e:
        raise fail(str(e)) from None
    if provider_labels is not None:
        try:
            provider_labels.write_text(json.dumps(provider_labels_json(world), indent=1) + "\n")
        except OSError as e:
            raise fail(f"cannot write --provider-labels {provider_labels}: "
                       f"{e.strerror or e}") from None
    if fmt != "claim":  # the formats' writers; labels have a slot in contract JSONL only
        if labels:
            raise fail("--labels writes contract JSONL only (labels have no FHIR/X12 slot)")
        claims = [Claim.model_validate(item.claim) for item in gen.generate(count)]
        if fmt == "fhir":
            sys.stdout.write("".join(json.dumps(to_fhir(c)) + "\n" for c in claims))
        else:
            sys.stdout.write(to_x12(claims))
        return
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


