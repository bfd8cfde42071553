"""Writing the vendored NCCI edit tables, whatever they were read from.

Why one module: the same three files (`ncci_ptp_practitioner.npz`, `mue_practitioner.csv`,
`addon.csv`) are rebuilt from a northstar checkout (`model.cms.northstar`, run by
`scripts/build_cms_tables.py` and `claimscope edits update`) and from CMS's own quarterly
files (`model.cms.ncci`, run by `claimscope edits update`). Both go through the writers
below, so their output is the same bytes for the same edits and `model.cms.tables` loads
either. Writes are deterministic (sorted rows, fixed zip timestamps): a rebuild from the
same inputs gives the same sha256 as `VERSION.json` records.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import os
import sys
import tempfile
import time
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

PUBLIC_DOMAIN = "public domain (US government work, CMS)"
PTP_FILE = "ncci_ptp_practitioner.npz"
MUE_FILE = "mue_practitioner.csv"
ADDON_FILE = "addon.csv"
MUE_HEADER = ["code", "mue", "mai", "rationale"]
ADDON_HEADER = ["addon", "primary", "edit_type"]

# (column 1, column 2) -> (modifier indicator, rationale): one active PTP edit each.
PtpPairs = dict[tuple[str, str], tuple[int, str]]
_T0 = time.perf_counter()


class BuildError(Exception):
    """A problem the user can fix (a missing directory, file or package, a bad row): one
    line, naming the file and row where there is one."""


def progress(message: str) -> None:
    """A step of a long build, on stderr (stdout stays free for a command's output)."""
    print(f"[{time.perf_counter() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


def quarter(day: dt.date) -> str:
    """`2024Q3` for any day of July-September 2024: how CMS names NCCI releases."""
    return f"{day.year}Q{(day.month - 1) // 3 + 1}"


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez_compressed's layout (np.load reads it, without pickle), at deflate level 9
    and with fixed timestamps, so a rebuild from the same inputs gives the same bytes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, array in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{name}.npy", (1980, 1, 1, 0, 0, 0)),
                        buf.getvalue(), zipfile.ZIP_DEFLATED, 9)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pack_ptp(pairs: PtpPairs) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Active pairs, packed as `model.cms.tables.PtpEdits` loads them: a code table plus
    uint16 code indexes sorted by (column 1, column 2), a uint8 modifier indicator and a
    uint8 index into the rationale texts per pair."""
    if set(Counter(m for m, _ in pairs.values())) - {0, 1, 9}:
        raise BuildError("modifier indicators other than 0, 1, 9")
    keys = sorted(pairs)
    codes = sorted({c for pair in keys for c in pair})
    if len(codes) >= 2**16 or max(map(len, codes), default=0) > 5:
        raise BuildError("codes no longer fit uint16 indexes / 5 characters")
    index = {c: i for i, c in enumerate(codes)}
    rationales = sorted({r for _, r in pairs.values()})
    if len(rationales) >= 2**8:
        raise BuildError("more than 255 PTP rationales: they no longer fit uint8 indexes")
    r_index = {r: i for i, r in enumerate(rationales)}
    arrays = {
        "codes": np.array(codes, dtype="<U5"),
        "column1": np.array([index[a] for a, _ in keys], dtype=np.uint16),
        "column2": np.array([index[b] for _, b in keys], dtype=np.uint16),
        "modifier": np.array([pairs[k][0] for k in keys], dtype=np.uint8),
        "rationale": np.array([r_index[pairs[k][1]] for k in keys], dtype=np.uint8),
        "rationales": np.array(rationales),
    }
    stats = {"pairs": len(keys), "codes": len(codes),
             "modifier_indicators": dict(sorted(Counter(arrays["modifier"].tolist()).items()))}
    return arrays, stats


def entry(path: Path, rows: int, source: Any, **info: Any) -> dict[str, Any]:
    """A written file's VERSION.json entry: its source, facts, rows, size and sha256."""
    size = path.stat().st_size
    progress(f"wrote {path.name}: {rows:,} rows, {size:,} bytes")
    return {"source": source, **info, "rows": rows, "bytes": size, "sha256": sha256(path)}


class Release(NamedTuple):
    """What `VERSION.json` says of one table beside its rows: where it came from, which
    release it is, and any further facts (e.g. `active_on`)."""

    source: Any
    release: str
    info: dict[str, Any]


class EditTables(NamedTuple):
    """The three NCCI edit tables as rows, ready to write, each with its release."""

    ptp: PtpPairs
    ptp_release: Release
    mue: list[list[str]]  # [code, units, MAI 1-3, rationale], sorted
    mue_release: Release
    addon: list[list[str]]  # [add-on, primary ("" for none), edit type 1-3], sorted
    addon_release: Release


def write_ptp(out: Path, pairs: PtpPairs, release: Release) -> dict[str, Any]:
    arrays, stats = pack_ptp(pairs)
    write_npz(out / PTP_FILE, arrays)
    return entry(out / PTP_FILE, stats["pairs"], release.source, release=release.release,
                 **release.info, licence=PUBLIC_DOMAIN, **stats)


def write_mue(out: Path, rows: list[list[str]], release: Release) -> dict[str, Any]:
    write_csv(out / MUE_FILE, MUE_HEADER, rows)
    return entry(out / MUE_FILE, len(rows), release.source, release=release.release,
                 **release.info, licence=PUBLIC_DOMAIN)


def write_addon(out: Path, rows: list[list[str]], release: Release) -> dict[str, Any]:
    write_csv(out / ADDON_FILE, ADDON_HEADER, rows)
    return entry(out / ADDON_FILE, len(rows), release.source, release=release.release,
                 **release.info, licence=PUBLIC_DOMAIN)


def write_edits(out: Path, tables: EditTables) -> dict[str, dict[str, Any]]:
    """Write the three edit tables into `out` and merge their entries into its
    VERSION.json (the other tables' entries and the top-level keys are kept).

    All or nothing: every file is written into a staging folder inside `out` first, then
    each replaces its old self (an atomic rename), VERSION.json last. A failure on the way
    leaves the old tables and their VERSION.json as they were, so a scoring process that
    loads them meanwhile never reads a half-written table."""
    out.mkdir(parents=True, exist_ok=True)
    version_path = out / "VERSION.json"
    try:
        version = (json.loads(version_path.read_text(encoding="utf-8"))
                   if version_path.exists() else {"tables": {}})
    except (OSError, ValueError) as exc:
        raise BuildError(f"cannot read {version_path}: {exc}") from None
    with tempfile.TemporaryDirectory(dir=out, prefix=".staging-") as staging:
        stage = Path(staging)
        entries = {
            MUE_FILE: write_mue(stage, tables.mue, tables.mue_release),
            ADDON_FILE: write_addon(stage, tables.addon, tables.addon_release),
            PTP_FILE: write_ptp(stage, tables.ptp, tables.ptp_release),
        }
        version.setdefault("tables", {}).update(entries)
        (stage / "VERSION.json").write_text(json.dumps(version, indent=1) + "\n",
                                            encoding="utf-8")
        for name in [*entries, "VERSION.json"]:
            os.replace(stage / name, out / name)
    progress(f"wrote {version_path}")
    return entries
