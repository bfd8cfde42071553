"""Reading NCCI edits from the files CMS publishes each quarter, in CMS's own layouts.

Why: an insurer refreshes its edits every quarter from CMS's downloads, not from a third
party's repackaging. `claimscope edits update --from DIR` reads a folder of those
downloads (the zips as downloaded, or what they unzip to, in any subfolder) and returns the
three tables `model.cms.build` writes. Files are recognised by CMS's file names; what is
read of each, and what confirmed it:

- **PTP edits, practitioner services**: `ccipra-v<version>r<revision>-f<n>.TXT`, one zip
  per part f1, f2, ... (all parts of one version are required). Tab-delimited text: an AMA
  copyright line, a "Column1/Column2 Edits" line, then a header that CMS spreads over four
  rows ("Column 1 | Column 2 | *=in existence | Effective | Deletion | Modifier | PTP Edit
  Rationale", continued by "prior to 1996 | Date | Date *=no data | 0=not allowed 1=allowed
  9=not applicable" in rows whose first cells are empty); a one-row header with the full
  texts is read too. Then: column 1, column 2, `*` or empty, effective date YYYYMMDD,
  deletion date YYYYMMDD or `*` (or empty) for none, modifier indicator 0/1/9, rationale.
  Confirmed by northstar's data-raw/ncci_ptps.R and ptp.R (the .xlsx twin: header on the
  third row, three continuation rows after it, `*` deletion = none, indicator 0/1/9) and by
  a project that checked its loader against the real ccipra-v322r0-f1.TXT
  (nilesh-auradkar05/Cotiviti-Topic-3-POC: copyright row, "Column1/Column2 Edits" row,
  four-row header block, YYYYMMDD dates, `*` or empty for no deletion). A `.csv` of the same
  rows (comma-delimited) is read as well.
- **MUEs, practitioner services**: `MCR_MUE_PractitionerServices_Eff_MM-DD-YYYY.csv`.
  Comma-separated: a quoted AMA copyright notice (one cell, possibly several lines), then
  the header "HCPCS/CPT Code, Practitioner Services MUE Values, MUE Adjudication Indicator,
  MUE Rationale" (the first cell may hold a line break), then one row per code; the MAI cell
  reads "1 Line Edit", "2 Date of Service Edit: Policy" or "3 Date of Service Edit:
  Clinical" and its leading digit is the MAI. Confirmed by northstar's data-raw/ncci_mues.R
  and mue.R (the .xlsx twin: header on the second row, MAI = the cell's first character,
  the three MAI texts with their counts) and by open-source parsers of the CSV
  (countercharge_engine's MUE parser: quoted multi-line copyright cell, then the header).
  The date in the file name (month first: Eff_07-01-2024 is the July 2024 release, matched
  with AOC_V2024Q3 and ccipra-v302r0) is the release's.
- **Add-on code edits**: `AOC_V<year>Q<quarter>[_<n>]-MCR.txt` (tab-delimited) or `.csv`.
  Columns found by name, wherever the header row is (an AMA copyright row may precede it):
  AOC_Edit_Type, Add-On_Code, AOC_DelDT, Primary_Code, Primary_Code_DelDT, AOC_Edit_EffDT,
  AOC_Edit_DelDT, Special_Instruction_Notes (a `_Julian` suffix on the date columns is
  accepted). Dates are YYYYDDD (year and day of year); 8-digit YYYYMMDD dates are read too.
  The primary `CCCCC` means "contractor-defined" (type 2). Confirmed by northstar's
  data-raw/ncci_aocs.R and ncci.R (the .xlsx twin: these columns, `_julian` date columns,
  CCCCC) and by a public claim-editing skill that documents AOC_V2026Q2-MCR.xlsx (copyright
  row, then these eight headers, YYYYDDD dates). The .txt layout itself was confirmed only
  as "tab-delimited with a header" (Gmills21/Agentic-Medical-Biller reads
  AOC_V2025Q4_01-MCR.txt that way); that it has the same columns as the .xlsx is assumed.

Not confirmed from a CMS document, and so followed as the existing northstar build does:
whether a deletion date is the first day an edit is out of force (taken so here: an edit
deleted on the as-of date is not active) and that an add-on edit stays active until its
own or its primary code's deletion date (the add-on code's own deletion date is not
applied, as northstar does not). Text is read as UTF-8, or cp1252 line by line where it is
not (CMS's copyright lines carry a cp1252 "(R)").

`.xlsx` files are not read (no spreadsheet reader is a dependency); CMS ships the same
table as .txt/.csv beside each, and an .xlsx alone is one clear error. Outpatient-hospital
and DME files are recognised and skipped. Any other file is an error, and so is any row
that does not parse: one line naming the file and line.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import re
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, NamedTuple

from model.cms.build import BuildError, EditTables, PtpPairs, Release, progress, quarter

_PTP = re.compile(r"ccipra-v(\d+)r(\d+)-f(\d+)\.(txt|csv|xlsx)", re.I)
_MUE = re.compile(r"MCR_MUE_PractitionerServices_Eff_(\d\d)-(\d\d)-(\d{4})\.(csv|xlsx)", re.I)
_AOC = re.compile(r"AOC_V(\d{4})Q([1-4])(_\d+)?-MCR\.(txt|csv|xlsx)", re.I)
_SKIPPED = re.compile(r"(ccioph-v\d+r\d+-f\d+|MCR_MUE_(OutpatientHospital|DMESupplier)"
                      r"Services_Eff_[\d-]+)\.(txt|csv|xlsx)", re.I)
_CODE = re.compile(r"[0-9A-Z]{5}")
HEADER_WITHIN = 50  # rows: CMS puts a few copyright and title lines above a header
_PTP_COLUMNS = ["column1", "column2", "inexistence", "effective", "deletion", "modifier",
                "ptpeditrationale"]


class Member(NamedTuple):
    """One CMS file: on disk, or a member of a downloaded zip."""

    path: Path  # the file, or the zip holding it
    name: str  # its own name (the zip member's base name)
    inner: str | None  # the member's name in the zip; None for a file on disk

    def __str__(self) -> str:
        return self.name if self.inner is None else f"{self.name} (in {self.path.name})"

    @contextmanager
    def open(self) -> Iterator[IO[bytes]]:
        if self.inner is None:
            with self.path.open("rb") as f:
                yield f
        else:
            try:
                with zipfile.ZipFile(self.path) as zf, zf.open(self.inner) as f:
                    yield f
            except (zipfile.BadZipFile, NotImplementedError) as exc:  # bad CRC, Deflate64
                raise BuildError(f"{self}: cannot read it from its zip: {exc}") from None

    def source(self, digest: str, size: int) -> dict[str, Any]:
        """What VERSION.json records of a file read: its name, zip, size and sha256."""
        where = {} if self.inner is None else {"zip": self.path.name}
        return {"file": self.name, **where, "bytes": size, "sha256": digest}


class _Read(NamedTuple):
    """A file's content as the readers yield it: (line number, stripped cells) per row
    after the header, the header itself first; `digest` fills as the rows are read."""

    rows: Iterator[tuple[int, list[str]]]
    digest: Any
    size: list[int]


# --- finding the files -----------------------------------------------------------------------


def _members(folder: Path) -> Iterator[Member]:
    """Every file under `folder`, zips opened: their members instead of themselves."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.name.startswith("."):
            continue
        if path.suffix.lower() != ".zip":
            yield Member(path, path.name, None)
            continue
        try:
            with zipfile.ZipFile(path) as zf:
                inner = [i.filename for i in zf.infolist() if not i.is_dir()]
        except (zipfile.BadZipFile, OSError) as exc:
            raise BuildError(f"{path}: not a readable zip ({exc})") from None
        yield from (Member(path, Path(name).name, name) for name in sorted(inner))


def _found(folder: Path) -> dict[str, list[Member]]:
    """The PTP, MUE and AOC files under `folder`, by kind, .xlsx twins set aside."""
    if not folder.is_dir():
        raise BuildError(f"{folder} is not a directory")
    found: dict[str, list[Member]] = {"ptp": [], "mue": [], "aoc": []}
    seen: dict[str, Member] = {}
    for member in _members(folder):
        kind = next((k for k, p in (("ptp", _PTP), ("mue", _MUE), ("aoc", _AOC))
                     if p.fullmatch(member.name)), None)
        if kind is None:
            if _SKIPPED.fullmatch(member.name):
                progress(f"skipping {member}: not practitioner edits")
            elif member.inner is not None:
                progress(f"skipping {member}: not an NCCI edit table")
            else:
                raise BuildError(f"{member.path}: not a CMS NCCI file this command reads "
                                 "(ccipra-*.TXT, MCR_MUE_PractitionerServices_Eff_*.csv, "
                                 "AOC_V*-MCR.txt, or the zips they come in)")
            continue
        if member.name.lower() in seen:
            _same_file(seen[member.name.lower()], member)
            continue
        seen[member.name.lower()] = member
        found[kind].append(member)
    for kind, members in found.items():
        found[kind] = _text_files(members)
    return found


def _same_file(first: Member, second: Member) -> None:
    """A file given twice (a zip and what it unzips to) is read once, if it is the same."""
    def digest(m: Member) -> str:
        with m.open() as f:
            return hashlib.file_digest(f, "sha256").hexdigest()

    if digest(first) != digest(second):
        raise BuildError(f"two different files named {first.name}: {first} and {second}")


def _text_files(members: list[Member]) -> list[Member]:
    """The .txt/.csv files; an .xlsx only where its text twin is missing, as an error."""
    stems = {Path(m.name).stem.lower() for m in members if not m.name.lower().endswith("xlsx")}
    for m in members:
        if m.name.lower().endswith(".xlsx") and Path(m.name).stem.lower() not in stems:
            raise BuildError(f"{m}: .xlsx is not read; use the .txt or .csv CMS ships "
                             "beside it (in the same download)")
    return [m for m in members if not m.name.lower().endswith(".xlsx")]


# --- reading rows ------------------------------------------------------------------------------


def _norm(cell: str) -> str:
    """A header cell as compared: lower case, letters and digits only (CMS's headers wrap
    and vary in spacing: "HCPCS/\\nCPT Code", "Column1", "*=in existence")."""
    return re.sub(r"[^a-z0-9]", "", cell.lower())


def _decoded(f: IO[bytes], digest: Any, size: list[int]) -> Iterator[str]:
    for raw in f:
        digest.update(raw)
        size[0] += len(raw)
        try:
            yield raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            yield raw.decode("cp1252", errors="replace")


@contextmanager
def _read(member: Member, is_header: Callable[[list[str]], bool]) -> Iterator[_Read]:
    """The rows of a CMS table: its header row (found by `is_header` on the normalised
    cells, within the first HEADER_WITHIN rows) and then every non-blank row."""
    digest, size = hashlib.sha256(), [0]
    delimiter = "\t" if member.name.lower().endswith(".txt") else ","
    progress(f"reading {member}")
    with member.open() as f:
        reader = csv.reader(_decoded(f, digest, size), delimiter=delimiter)

        def rows() -> Iterator[tuple[int, list[str]]]:
            for row in reader:
                if is_header([_norm(c) for c in row]):
                    yield reader.line_num, [c.strip() for c in row]
                    break
                if reader.line_num > HEADER_WITHIN:
                    raise BuildError(f"{member}: no header row in its first {HEADER_WITHIN} "
                                     "lines: not the layout CMS publishes")
            else:
                raise BuildError(f"{member}: no header row: not the layout CMS publishes")
            for row in reader:
                if any(c.strip() for c in row):
                    yield reader.line_num, [c.strip() for c in row]

        try:
            yield _Read(rows(), digest, size)
        except csv.Error as exc:
            raise BuildError(f"{member} line {reader.line_num}: {exc}") from None


def _bad(member: Member, line: int, why: str, row: list[str]) -> BuildError:
    return BuildError(f"{member} line {line}: {why}: {' | '.join(row)!r}")


def _named(pattern: re.Pattern[str], member: Member) -> re.Match[str]:
    """The parts of a CMS file name (version, part, release date, quarter)."""
    match = pattern.fullmatch(member.name)
    if match is None:
        raise BuildError(f"{member}: not named as CMS names this file")
    return match


def _code(text: str) -> str | None:
    return text if _CODE.fullmatch(text) else None


def _date(text: str) -> dt.date | None:
    """YYYYMMDD (PTP), or YYYYDDD, the year and day of year (AOC); None if neither."""
    try:
        if re.fullmatch(r"\d{8}", text):
            return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
        if re.fullmatch(r"\d{7}", text):
            return dt.date(int(text[:4]), 1, 1) + dt.timedelta(days=int(text[4:]) - 1)
    except ValueError:
        return None
    return None


def _no_date(text: str) -> bool:
    return text in ("", "*")


def _active(day: dt.date, effective: dt.date | None, *deleted: dt.date | None) -> bool:
    """In force on `day`: effective by then, and not deleted on or before it."""
    return (effective is None or effective <= day) and all(d is None or d > day
                                                            for d in deleted)


# --- PTP ---------------------------------------------------------------------------------------


class _Window(NamedTuple):
    effective: dt.date
    deleted: dt.date | None
    modifier: int
    rationale: str


def _ptp_rows(member: Member, as_of: dt.date | None,
              windows: dict[tuple[str, str], list[_Window]]
              ) -> tuple[dict[str, Any], int, dt.date]:
    """Add the file's edits that may be in force on `as_of` (None: on the newest effective
    date of all the files, which is at least this file's newest so far) to `windows`.
    Returns the file's source entry, its row count and its newest effective date."""
    interned: dict[str, str] = {}
    newest = dt.date.min
    count = 0
    with _read(member, lambda cells: cells[:2] == _PTP_COLUMNS[:2]) as read:
        _, header = next(read.rows)
        names = [_norm(c) for c in header]
        if len(names) < 6 or not all(n.startswith(p) for n, p in zip(names, _PTP_COLUMNS,
                                                                      strict=False)):
            raise BuildError(f"{member}: unexpected PTP columns {header}")
        started = False
        for line, row in read.rows:
            if not started and not row[0]:
                continue  # the header's continuation rows ("prior to 1996", "Date", ...)
            started = True
            window = _ptp_window(member, line, row)
            count += 1
            newest = max(newest, window.effective)
            day = as_of or newest
            if window.deleted is not None and window.deleted <= day:
                continue
            if as_of is not None and window.effective > as_of:
                continue
            pair = (interned.setdefault(row[0], row[0]), interned.setdefault(row[1], row[1]))
            windows.setdefault(pair, []).append(window)
        source = member.source(read.digest.hexdigest(), read.size[0])
    return source, count, newest


def _ptp_window(member: Member, line: int, row: list[str]) -> _Window:
    if len(row) < 6:
        raise _bad(member, line, "fewer than 6 columns", row)
    if not (_code(row[0]) and _code(row[1])):
        raise _bad(member, line, "column 1 and 2 must be 5-character codes", row)
    effective = _date(row[3]) if len(row[3]) == 8 else None
    deleted = None if _no_date(row[4]) else _date(row[4]) if len(row[4]) == 8 else None
    if effective is None or (deleted is None and not _no_date(row[4])):
        raise _bad(member, line, "dates must be YYYYMMDD (deletion: or *)", row)
    if row[5] not in ("0", "1", "9"):
        raise _bad(member, line, "modifier indicator must be 0, 1 or 9", row)
    return _Window(effective, deleted, int(row[5]), row[6] if len(row) > 6 else "")


def _ptp_parts(members: list[Member]) -> list[Member]:
    """The parts f1..fn of one PTP version, in order; anything else is an error."""
    if not members:
        raise BuildError("no NCCI PTP practitioner file (ccipra-v<version>r<n>-f<part>.TXT)")
    names = {m: _named(_PTP, m) for m in members}
    if len({(match[1], match[2]) for match in names.values()}) > 1:
        raise BuildError(f"PTP files of more than one version: {sorted(m.name for m in members)}"
                         "; give one quarter's files")
    parts = sorted(members, key=lambda m: int(names[m][3]))
    numbers = [int(names[m][3]) for m in parts]
    if numbers != list(range(1, len(parts) + 1)):
        raise BuildError(f"PTP parts {numbers} given: every part from f1 on is needed")
    return parts


def _select_ptp(windows: dict[tuple[str, str], list[_Window]], day: dt.date) -> PtpPairs:
    pairs: PtpPairs = {}
    for pair, found in windows.items():
        active = {(w.modifier, w.rationale) for w in found if _active(day, w.effective,
                                                                      w.deleted)}
        if len(active) > 1:
            raise BuildError(f"two PTP edits for {pair[0]}/{pair[1]} in force on {day}")
        if active:
            pairs[pair] = active.pop()
    if not pairs:
        raise BuildError(f"no PTP edit is in force on {day}")
    return pairs


# --- MUE ---------------------------------------------------------------------------------------


def _mue(member: Member) -> tuple[list[list[str]], dict[str, Any]]:
    """[code, units, MAI, rationale] per code, sorted, and the file's source entry."""
    rows: dict[str, list[str]] = {}
    with _read(member, lambda cells: bool(cells) and cells[0] == "hcpcscptcode") as read:
        _, header = next(read.rows)
        at = _columns(member, header, {"code": "HCPCS/CPT Code",
                                       "mue": "Practitioner Services MUE Values",
                                       "mai": "MUE Adjudication Indicator",
                                       "rationale": "MUE Rationale"})
        for line, row in read.rows:
            if len(row) <= max(at.values()):
                raise _bad(member, line, f"fewer than {max(at.values()) + 1} columns", row)
            code, units, mai = row[at["code"]], row[at["mue"]], row[at["mai"]]
            digit = re.match(r"([123])(\D|$)", mai)
            if not _code(code) or not units.isdigit() or not digit:
                raise _bad(member, line, "want a 5-character code, a whole number of units "
                           "and an MAI cell starting 1, 2 or 3", row)
            new = [code, str(int(units)), digit[1], row[at["rationale"]]]
            if rows.setdefault(code, new) != new:
                raise _bad(member, line, f"a second, different MUE for {code}", row)
        source = member.source(read.digest.hexdigest(), read.size[0])
    return sorted(rows.values()), source


def _columns(member: Member, header: list[str], wanted: dict[str, str]) -> dict[str, int]:
    """Where each wanted column is, by its CMS header text (a `Julian` suffix allowed)."""
    names = [_norm(c) for c in header]
    at = {}
    for key, text in wanted.items():
        found = [i for i, n in enumerate(names) if n in (_norm(text), _norm(text) + "julian")]
        if not found:
            raise BuildError(f"{member}: no {text!r} column in its header {header}")
        at[key] = found[0]
    return at


# --- add-on codes ----------------------------------------------------------------------------


class _AddOn(NamedTuple):
    row: list[str]  # [add-on, primary or "", edit type]
    effective: dt.date | None
    deleted: tuple[dt.date | None, dt.date | None]  # the edit's, the primary code's


def _aoc(member: Member) -> tuple[list[_AddOn], dict[str, Any]]:
    edits = []
    with _read(member, lambda cells: "addoncode" in cells and "primarycode" in cells) as read:
        _, header = next(read.rows)
        at = _columns(member, header, {
            "type": "AOC_Edit_Type", "addon": "Add-On_Code", "primary": "Primary_Code",
            "primary_del": "Primary_Code_DelDT", "effective": "AOC_Edit_EffDT",
            "deleted": "AOC_Edit_DelDT"})
        for line, row in read.rows:
            if len(row) <= max(at.values()):
                raise _bad(member, line, f"fewer than {max(at.values()) + 1} columns", row)
            edits.append(_addon(member, line, row, at))
        source = member.source(read.digest.hexdigest(), read.size[0])
    return edits, source


def _addon(member: Member, line: int, row: list[str], at: dict[str, int]) -> _AddOn:
    add, primary, kind = row[at["addon"]], row[at["primary"]], row[at["type"]]
    if not _code(add) or not (_code(primary) or primary == "CCCCC") \
            or kind not in ("1", "2", "3"):
        raise _bad(member, line, "want 5-character add-on and primary codes (or CCCCC) "
                   "and an edit type 1, 2 or 3", row)
    dates = {key: row[at[key]] for key in ("effective", "deleted", "primary_del")}
    parsed = {key: None if _no_date(text) else _date(text) for key, text in dates.items()}
    if any(parsed[key] is None and not _no_date(dates[key]) for key in dates):
        raise _bad(member, line, "dates must be YYYYDDD or YYYYMMDD", row)
    # CMS writes CCCCC as the primary of a type 2 edit (no primary codes named): left empty.
    return _AddOn([add, "" if primary == "CCCCC" else primary, kind], parsed["effective"],
                  (parsed["deleted"], parsed["primary_del"]))


def _select_aoc(edits: list[_AddOn], day: dt.date) -> list[list[str]]:
    rows = {tuple(e.row) for e in edits if _active(day, e.effective, *e.deleted)}
    kinds: dict[str, str] = {}
    for add, _, kind in rows:
        if kinds.setdefault(add, kind) != kind:
            raise BuildError(f"add-on {add} has edits of types {kinds[add]} and {kind} in "
                             f"force on {day}")
    return sorted(list(r) for r in rows)


# --- the three tables --------------------------------------------------------------------------


def _one(members: list[Member], what: str) -> Member:
    if len(members) != 1:
        raise BuildError(f"want one {what} file, found {len(members)}"
                         + (f": {', '.join(map(str, members))}" if members else ""))
    return members[0]


def edit_tables(folder: Path, as_of: dt.date | None = None) -> EditTables:
    """The PTP, MUE and add-on tables of one quarter's CMS files under `folder`, with the
    PTP and add-on edits in force on `as_of` (default: the newest effective date in the
    PTP and add-on files, i.e. the release's first day)."""
    found = _found(folder)
    if not any(found.values()):
        raise BuildError(f"no CMS NCCI file in {folder}")
    mue_file = _one(found["mue"], "MUE practitioner (MCR_MUE_PractitionerServices_Eff_*.csv)")
    aoc_file = _one(found["aoc"], "add-on code edit (AOC_V*-MCR.txt)")
    windows: dict[tuple[str, str], list[_Window]] = {}
    ptp_sources, ptp_rows, newest = [], 0, dt.date.min
    for part in _ptp_parts(found["ptp"]):
        source, count, part_newest = _ptp_rows(part, as_of, windows)
        ptp_sources.append(source)
        ptp_rows += count
        newest = max(newest, part_newest)
    mue, mue_source = _mue(mue_file)
    aoc, aoc_source = _aoc(aoc_file)
    day = as_of or max([newest, *(e.effective for e in aoc if e.effective)])
    pairs = _select_ptp(windows, day)
    progress(f"PTP: {ptp_rows:,} rows, {len(pairs):,} pairs in force on {day}")
    addons = _select_aoc(aoc, day)
    progress(f"add-on edits: {len(aoc):,} rows, {len(addons):,} in force on {day}")
    mue_day, aoc_name = _named(_MUE, mue_file), _named(_AOC, aoc_file)
    mue_release = dt.date(int(mue_day[3]), int(mue_day[1]), int(mue_day[2]))
    return EditTables(
        pairs, Release(ptp_sources, f"NCCI PTP edits, practitioner services, {day} "
                       f"({quarter(day)})", {"active_on": str(day)}),
        mue, Release([mue_source], f"NCCI MUEs, practitioner services, {mue_release}", {}),
        addons, Release([aoc_source], f"NCCI add-on code edits, {aoc_name[1]}Q{aoc_name[2]}",
                        {"active_on": str(day)}),
    )
