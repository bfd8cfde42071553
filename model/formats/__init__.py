"""Claims as insurers hold them: FHIR R4 and X12 837P in and out of the claim contract.

The API a CLI command or a stream worker needs, and nothing else:

    convert(fmt, data) -> list[Claim | ConversionError]   one message's or file's claims
    read(fmt, source) -> Iterator[Claim | ConversionError] a file's claims, JSONL streamed
    References.load(paths) -> References                   member/provider reference data
    to_fhir(claim) -> dict                                 a FHIR R4 Claim resource
    to_x12(claims) -> str                                  one X12 837P interchange
    claim_json(claim) -> str                               contract JSON, numbers as numbers

`convert` never raises for bad input: every record that is not a valid claim comes back
as a ConversionError with its 1-based index, a path (FHIRPath or X12 loop/segment) and
the reason, in input order among the claims, so one broken claim never sinks the others.
An error of index 0 stands for the whole input (an X12 envelope that does not hold).
Mapping tables, library choices and limits: docs/formats.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import BinaryIO, get_args

from pydantic import ValidationError

from model.claims import Claim, Format, claim_json, describe_errors, parse_claim
from model.formats import fhir, x12
from model.formats.common import ConversionError
from model.formats.references import ReferenceDataError, References

MAX_INPUT_BYTES = 64 * 1024 * 1024  # one message or file converted at once


def convert(fmt: Format, data: bytes | str, references: References | None = None
            ) -> list[Claim | ConversionError]:
    """The claims in one input of format `fmt` ("claim" JSONL, "fhir", "x12"), in order.

    `references`: the Patients, Practitioners, … that FHIR claims point at but do not carry;
    an X12 claim's provider taxonomy by NPI, and its member when it has no DMG (contract
    JSONL carries its member and provider, and does not read it).

    Cost: about 0.8 ms (FHIR) and 1.5 ms (X12) of CPU per claim, the libraries' validation
    mostly (docs/formats.md has the measurement). Raises ValueError only for an unknown `fmt`.
    """
    if fmt not in get_args(Format):
        raise ValueError(f"unknown format {fmt!r}: one of {', '.join(get_args(Format))}")
    if len(data) > MAX_INPUT_BYTES:
        return [ConversionError(0, "", f"{len(data):,} bytes: more than the "
                                f"{MAX_INPUT_BYTES:,} one input may hold")]
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            return [ConversionError(0, "", f"not UTF-8 (byte {e.start})")]
    else:
        text = data
    if fmt == "fhir":
        return fhir.read(text, references)
    if fmt == "x12":
        return x12.read(text, references)
    return list(_contract_lines(text.encode("utf-8", errors="surrogateescape").splitlines()))


def read(fmt: Format, source: BinaryIO, references: References | None = None
         ) -> Iterator[Claim | ConversionError]:
    """The claims of a file, in order, each bad record as a ConversionError.

    Contract JSONL is read a line at a time, so a file of any size streams; a FHIR or X12
    document is converted whole (a Bundle or an interchange is one document, bounded by
    MAX_INPUT_BYTES). Raises ValueError only for an unknown `fmt`.
    """
    if fmt == "claim":
        return _contract_lines(source)
    return iter(convert(fmt, source.read(), references))


def _contract_lines(lines: Iterable[bytes]) -> Iterator[Claim | ConversionError]:
    """One claim per non-blank line; a bad line's error names its line and, when it still
    names one, its claim_id."""
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield parse_claim(line)
        except ValidationError as e:
            yield ConversionError(lineno, "", "; ".join(describe_errors(e)), _claim_id(line),
                                  unit="line")


def _claim_id(line: bytes) -> str | None:
    try:
        cid = json.loads(line).get("claim_id")
    except (ValueError, AttributeError):
        return None
    return cid if isinstance(cid, str) else None


def to_fhir(claim: Claim) -> dict:
    """A FHIR R4 Claim resource (JSON-ready) that `convert("fhir", ...)` reads back as `claim`.

    Raises ValueError for a specialty without a NUCC taxonomy code."""
    return fhir.write(claim)


def to_x12(claims: list[Claim]) -> str:
    """One X12 5010 837P interchange of `claims` that `convert("x12", ...)` reads back.

    Raises ValueError for a claim X12 cannot carry (see `model.formats.x12.write`)."""
    return x12.write(claims)


__all__ = ["ConversionError", "Format", "ReferenceDataError", "References", "claim_json",
           "convert", "read", "to_fhir", "to_x12"]
