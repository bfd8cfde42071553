"""Reading CMS tables from a checkout of northstar (andrewallenbruce/northstar, Apache-2.0).

northstar, an R package, keeps CMS's files as R `qs` files under
`inst/extdata/pins/<table>/<version>/<table>.qs`, with a flat-YAML `data.txt` beside each
naming the release; `model.cms.qs` reads them. This module holds the checkout and the
NCCI edit tables read from it (PTP practitioner edits of 2024-07-01, practitioner MUEs of
2024-07-01, add-on code edits of 2024-06-03); `scripts/build_cms_tables.py` reads the fee
schedule and HCPCS tables through the same `Northstar`, and `claimscope edits update`
accepts a checkout as well as CMS's own files (`model.cms.ncci`).
"""

from __future__ import annotations

import datetime as dt
import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from model.cms.build import BuildError, EditTables, PtpPairs, Release, progress, quarter
from model.cms.qs import QsError, data_frame, read_qs

PINS = Path("inst") / "extdata" / "pins"
NCCI_DATE = dt.date(2024, 7, 1)  # the PTP pin's release: "Edits 07-01-2024"


def is_checkout(root: Path) -> bool:
    return (root / PINS).is_dir()


class Northstar:
    """A northstar checkout: its pins (one version each) and where they came from."""

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise BuildError(f"northstar checkout not found: {root} is not a directory")
        if not is_checkout(root):
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
        try:
            return data_frame(read_qs(path))
        except QsError as exc:
            raise BuildError(f"{path}: {exc}") from None

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


def mue_practitioner(ns: Northstar) -> list[list[str]]:
    mue = ns.table("ncci_mue_prac")
    if set(mue["mue_service"]) != {"Practitioner"}:
        raise BuildError(f"ncci_mue_prac holds other services: {set(mue['mue_service'])}")
    rows = zip(mue["hcpcs_code"], mue["mue_units"].tolist(), mue["mue_mai"].tolist(),
               mue["mue_rationale"], strict=True)
    return sorted([code, str(units), str(mai), why] for code, units, mai, why in rows)


def addon(ns: Northstar) -> list[list[str]]:
    """The add-on edits northstar kept: those with no edit or primary-code deletion date."""
    aoc = ns.table("ncci_aoc")
    rows = zip(aoc["add_on_code"], aoc["primary_code"], aoc["aoc_edit_type"].tolist(),
               strict=True)
    # CMS writes CCCCC as the primary of a type 2 edit (no primary codes named): left empty.
    return sorted([add, "" if primary == "CCCCC" else primary, str(kind)]
                  for add, primary, kind in rows)


def ncci_ptp(ns: Northstar, as_of: dt.date = NCCI_DATE) -> PtpPairs:
    """Pairs not deleted on or before `as_of` (the pin carries no effective dates).

    northstar stores each edit twice, once per code (`ptp_type` Comprehensive = the row's
    code is column 1, Component = column 2), with the column-2 (or -1) codes nested; its
    `ptp_deleted` is 9999-12-31 for edits still in force. Comprehensive rows alone give
    every pair once."""
    ptp = ns.table("ncci_ptp_prac")
    cutoff = np.datetime64(as_of)
    pairs: PtpPairs = {}
    mirrored = 0
    for code, kind, nested, deleted, modifier, rationale in zip(
        ptp["hcpcs_code"], ptp["ptp_type"], ptp["ptp_complements"], ptp["ptp_deleted"],
        ptp["ptp_mod"].tolist(), ptp["ptp_rationale"], strict=True,
    ):
        if deleted <= cutoff:
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
    return pairs


def edit_tables(ns: Northstar, as_of: dt.date = NCCI_DATE) -> EditTables:
    """The three NCCI edit tables of the checkout, with the releases VERSION.json names."""
    mue = mue_practitioner(ns)
    aoc = addon(ns)
    ptp = ncci_ptp(ns, as_of)
    return EditTables(
        ptp, Release([ns.sources["ncci_ptp_prac"]],
                     f"NCCI PTP edits, practitioner services, {as_of} ({quarter(as_of)})",
                     {"active_on": str(as_of)}),
        mue, Release([ns.sources["ncci_mue_prac"]],
                     "NCCI MUEs, practitioner services, 2024-07-01", {}),
        aoc, Release([ns.sources["ncci_aoc"]], "NCCI add-on code edits, 2024-06-03", {}),
    )
