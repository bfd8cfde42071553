"""Build `model/vocab/nucc_taxonomy.csv` from NUCC's Health Care Provider Taxonomy CSV.

    python scripts/build_nucc_taxonomy.py nucc_taxonomy_251.csv

The source is the code set's CSV as NUCC publishes it (nucc.org, "Provider Taxonomy" ->
"CSV"; the file is named `nucc_taxonomy_<version>.csv`, 251 = version 25.1). This machine
cannot reach nucc.org: the 25.1 file was taken, unchanged, from a public GitHub repository
that holds a copy (model/vocab/SOURCES.md, "Provider taxonomy", says which, and its sha256).

Writes `code,grouping,classification,specialization` (UTF-8, a header, NUCC's row order):
the four levels, without NUCC's definitions, notes and display names. Codes NUCC marks
inactive stay in: older claims still carry them. Then prints how many codes map to each
ClaimScope specialty under `model.taxonomy`'s rules, the figures docs/formats.md quotes.

A failure is one line, `build_nucc_taxonomy: error: ...`, exit 1. Standard library plus the
repository's own `model.taxonomy` (for the counts).
"""

from __future__ import annotations

import argparse
import collections
import csv
import hashlib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "model" / "vocab" / "nucc_taxonomy.csv"
COLUMNS = {"code": "Code", "grouping": "Grouping", "classification": "Classification",
           "specialization": "Specialization"}
CODE = re.compile(r"[0-9]{3}[0-9A-Z]{6}X")
MIN_CODES = 800  # NUCC 25.1 has 883; far fewer means a truncated or wrong file


def fail(message: str) -> None:
    print(f"build_nucc_taxonomy: error: {message}", file=sys.stderr)
    raise SystemExit(1)


def read(source: Path) -> list[dict[str, str]]:
    """The four levels of every code in NUCC's CSV, checked: unique, well-formed codes."""
    with source.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        missing = set(COLUMNS.values()) - set(reader.fieldnames or [])
        if missing:
            fail(f"{source}: not a NUCC taxonomy CSV, no column {sorted(missing)}")
        rows = [{ours: (r[theirs] or "").strip() for ours, theirs in COLUMNS.items()}
                for r in reader]
    bad = [r["code"] for r in rows if not CODE.fullmatch(r["code"])]
    if bad:
        fail(f"{source}: {len(bad)} malformed codes, e.g. {bad[:3]}")
    dupes = [c for c, n in collections.Counter(r["code"] for r in rows).items() if n > 1]
    if dupes:
        fail(f"{source}: codes listed twice: {dupes[:3]}")
    if len(rows) < MIN_CODES:
        fail(f"{source}: only {len(rows)} codes (NUCC's code set has ~870)")
    if any(not r["grouping"] or not r["classification"] for r in rows):
        fail(f"{source}: a code without a grouping or classification")
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", type=Path, help="NUCC's nucc_taxonomy_<version>.csv")
    ap.add_argument("--out", type=Path, default=OUT, help="where to write (default: %(default)s)")
    args = ap.parse_args(argv)
    if not args.source.is_file():
        fail(f"{args.source}: no such file")
    rows = read(args.source)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(COLUMNS), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    digest = hashlib.sha256(args.source.read_bytes()).hexdigest()
    print(f"{args.out}: {len(rows)} codes from {args.source.name} (sha256 {digest})",
          file=sys.stderr)

    sys.path.insert(0, str(ROOT))
    from model.taxonomy import specialty_of_row
    counts = collections.Counter(specialty_of_row(*r.values()) or "(unknown)" for r in rows)
    for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"{n:5d}  {name}")


if __name__ == "__main__":
    main()
