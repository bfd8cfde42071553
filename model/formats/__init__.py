"""Claims as insurers hold them: FHIR R4 and X12 837P in and out of the claim contract.

The API a CLI command or a stream worker needs, and nothing else:

    convert(fmt, data) -> list[Claim | ConversionError]   one message's or file's claims
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

from typing import Literal

from pydantic import ValidationError

from model.claims import Claim, claim_json, describe_errors, parse_claim
from model.formats import fhir, x12
from model.formats.common import ConversionError

Format = Literal["claim", "fhir", "x12"]
FORMATS: tuple[Format, ...] = ("claim", "fhir", "x12")
MAX_INPUT_BYTES = 64 * 1024 * 1024  # one message or file converted at once


def convert(fmt: str, data: bytes | str) -> list[Claim | ConversionError]:
    """The claims in one input of format `fmt` ("claim" JSONL, "fhir", "x12"), in order.

    Cost: about 0.8 ms (FHIR) and 1.5 ms (X12) of CPU per claim, the libraries' validation
    mostly (docs/formats.md has the measurement). Raises ValueError only for an unknown `fmt`.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: one of {', '.join(FORMATS)}")
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
        return fhir.read(text)
    if fmt == "x12":
        return x12.read(text)
    return _contract_lines(text)


def _contract_lines(text: str) -> list[Claim | ConversionError]:
    out: list[Claim | ConversionError] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                out.append(parse_claim(line))
            except ValidationError as e:
                out.append(ConversionError(lineno, "", "; ".join(describe_errors(e))))
    return out


def to_fhir(claim: Claim) -> dict:
    """A FHIR R4 Claim resource (JSON-ready) that `convert("fhir", ...)` reads back as `claim`.

    Raises ValueError for a specialty without a NUCC taxonomy code."""
    return fhir.write(claim)


def to_x12(claims: list[Claim]) -> str:
    """One X12 5010 837P interchange of `claims` that `convert("x12", ...)` reads back.

    Raises ValueError for a claim X12 cannot carry (see `model.formats.x12.write`)."""
    return x12.write(claims)


__all__ = ["FORMATS", "ConversionError", "claim_json", "convert", "to_fhir", "to_x12"]
