"""How a corpus of files converts: per source, how many records became claims, how many
were left out on purpose, how many failed, and why, grouped (`claimscope convert --report`).

A corpus is a directory of sample files, one sub-directory per source (tests/data/corpus:
the FHIR specification's examples, CARIN Blue Button, Synthea, X12 libraries' test files).
Each file's format is taken from its content when not given: JSON (a resource, a Bundle or
NDJSON) is FHIR, text that begins with `ISA` is X12; anything else is reported as a file
that is neither, never guessed at.

A FHIR file that holds only resources of other kinds (a Patient, Practitioner, Organization,
Coverage: what claims point at) is no record: the Patients, Practitioners, PractitionerRoles
and Organizations among them are the reference data of their source's claims, as a
payer's API ships them beside its EOBs, and the rest is passed over (`other_files`).

Reasons are grouped by their shape, so that "ICD-9 code '4019' …" and "ICD-9 code '25000'
…" count as one reason: quoted values, list positions and amounts are blanked.

    >>> reason_group("item[3].productOrService: no CPT/HCPCS coding")
    'item[…].productOrService: no CPT/HCPCS coding'
    >>> reason_group("item[0]: procedures.1.charge: Input should be greater than or equal to 0")
    'item[…]: procedures.….charge: Input should be greater than or equal to 0'
    >>> reason_group("2300.HI01-1: ICD-9 code '4019' (and 2 more)")
    "2300.HI01-1: ICD-9 code '…' (and … more)"
"""

from __future__ import annotations

import collections
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from model.claims import Format
from model.formats import convert
from model.formats.common import ConversionError
from model.formats.references import PEOPLE, ReferenceDataError, References
from model.results import Result

# what varies between records with the same reason: quoted values, list positions in a
# path (`item[3]`, `procedures.1`), amounts, "(and 2 more)", X12 control numbers and counts
VALUES = [(re.compile(r"'[^']*'|\"[^\"]*\""), "'…'"), (re.compile(r"\[\d+\]"), "[…]"),
          (re.compile(r"\.\d+(?=[.:\s]|$)"), ".…"), (re.compile(r"-?\d+\.\d+"), "…"),
          (re.compile(r"\(and \d+ more\)"), "(and … more)"),
          (re.compile(r"\bST \w+"), "ST …"), (re.compile(r"\bhas \d+"), "has …")]
NOT_SOURCES = {"LICENSES"}  # a corpus's licence texts, beside its sources
READABLE_SUFFIXES = {".json", ".ndjson", ".837", ".837i", ".837p", ".837d", ".x12", ".edi",
                     ".txt", ".dat"}


def reason_group(message: str) -> str:
    """A failure's message with the values in it blanked (module docstring)."""
    for pattern, blank in VALUES:
        message = pattern.sub(blank, message)
    return message


def detect(data: bytes) -> Format | None:
    """fhir for JSON, x12 for an interchange (after any BOM and blank space), else None."""
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:3]
    if head[:1] in (b"{", b"["):
        return "fhir"
    return "x12" if head.upper() == b"ISA" else None


@dataclass
class SourceFigures(Result):
    """One source's counts: files read, records in them and what became of each."""

    files: int = 0
    other_files: int = 0  # FHIR resources of other kinds: reference data, or passed over
    records: int = 0
    converted: int = 0
    skipped: int = 0  # left out on purpose (prior authorisations), not failures
    failed: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # grouped reason -> records
    examples: dict[str, str] = field(default_factory=dict)  # grouped reason -> a record of it
    reference_problems: list[str] = field(default_factory=list)  # its own people files

    @property
    def converted_share(self) -> float | None:
        """Converted among the records that are claims to score (skipped ones aside)."""
        n = self.records - self.skipped
        return round(self.converted / n, 4) if n else None


@dataclass
class CorpusReport(Result):
    """Per source (the first directory under the root; `.` for files at the top)."""

    root: str
    sources: dict[str, SourceFigures]

    @property
    def total(self) -> SourceFigures:
        out = SourceFigures()
        for s in self.sources.values():
            out.files += s.files
            out.other_files += s.other_files
            out.records += s.records
            out.converted += s.converted
            out.skipped += s.skipped
            out.failed += s.failed
            for reason, n in s.reasons.items():
                out.reasons[reason] = out.reasons.get(reason, 0) + n
        return out


def resource_kinds(data: bytes) -> set[str]:
    """The resourceTypes of a FHIR file: its document's, else each NDJSON line's; empty
    when none can be read (the file is then converted, and says why it is not a claim)."""
    text = data.decode("utf-8-sig", errors="replace").strip()
    try:
        docs = [json.loads(text)]
    except ValueError:
        docs = []
        for line in text.splitlines():
            try:
                docs.append(json.loads(line))
            except ValueError:
                return set()
    kinds = {d.get("resourceType") for d in docs if isinstance(d, dict)}
    return {k for k in kinds if isinstance(k, str)}


def corpus_report(root: Path, fmt: Format | None = None,
                  references: Sequence[Path] = ()) -> CorpusReport:
    """Convert every readable file under `root` (a directory, or one file) and count.

    A file's format is `fmt` when given, else detected from its content (`detect`); a file
    that is neither FHIR nor X12 counts as one failed record of its own. A source's
    Patient, Practitioner, PractitionerRole and Organization files are reference data for
    its claims, with the `references` files read after them (the same resource given twice:
    theirs is kept). Raises ReferenceDataError for a references file that cannot be read."""
    files = [root] if root.is_file() else sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in READABLE_SUFFIXES
        and p.relative_to(root).parts[0] not in NOT_SOURCES)
    by_source: dict[str, list[tuple[Path, bytes, Format | None]]] = collections.defaultdict(list)
    for path in files:
        rel = path.relative_to(root) if path != root else Path(path.name)
        data = path.read_bytes()
        by_source[rel.parts[0] if len(rel.parts) > 1 else "."].append(
            (path, data, fmt or detect(data)))
    sources = {name: _source(items, references) for name, items in sorted(by_source.items())}
    return CorpusReport(str(root), sources)


def _source(items: list[tuple[Path, bytes, Format | None]], given: Sequence[Path]
            ) -> SourceFigures:
    fig = SourceFigures(files=len(items))
    refs, convertible = References(), []
    for path, data, kind in items:
        kinds = resource_kinds(data) if kind == "fhir" else set()
        if not kinds or kinds & {"Claim", "ExplanationOfBenefit", "Bundle"}:
            convertible.append((path, data, kind))
            continue
        fig.other_files += 1
        if kinds & set(PEOPLE):
            try:
                refs.read_file(path)
            except ReferenceDataError as e:  # the source's own: noted, not fatal
                fig.reference_problems.append(str(e))
    fig.reference_problems += refs.problems
    for path in given:  # after the source's own: the same resource given twice, theirs wins
        refs.read_file(path)
    for path, data, kind in convertible:
        results: list = [ConversionError(0, "", "neither FHIR JSON nor an X12 interchange")
                         ] if kind is None else convert(kind, data, refs if len(refs) else None)
        for r in results:
            fig.records += 1
            if not isinstance(r, ConversionError):
                fig.converted += 1
            elif r.skipped:
                fig.skipped += 1
            else:
                fig.failed += 1
                group = reason_group(f"{r.path}: {r.message}" if r.path else r.message)
                fig.reasons[group] = fig.reasons.get(group, 0) + 1
                fig.examples.setdefault(group, f"{path.name} record {r.index}")
    fig.reasons = dict(sorted(fig.reasons.items(), key=lambda kv: -kv[1]))
    return fig
