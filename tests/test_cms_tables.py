"""The vendored CMS tables (model/vocab/cms/), their loaders, the qs reader and the build
script's checks. Spot checks are facts of the CMS releases themselves (NCCI PTP and MUE
2024-07-01, add-on edits 2024-06-03, the July 2024 Physician Fee Schedule)."""

from __future__ import annotations

import ast
import csv
import hashlib
import importlib.util
import re
import shutil
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from model.cms import tables
from model.cms.qs import QsError, RObject, data_frame, read_qs

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
CMS = tables.folder()


# --- the qs reader, on real northstar files ------------------------------------------------


def test_qs_reads_the_anesthesia_conversion_factors() -> None:
    """pfs_anes.qs (1,095 bytes), the smallest real table in northstar: a tibble of the 2024
    anesthesia conversion factor by Medicare contractor and locality."""
    obj = read_qs(DATA / "pfs_anes.qs")
    assert isinstance(obj, RObject)
    assert obj.r_class == ["tbl_df", "tbl", "data.frame"]
    assert obj.attributes["row.names"].tolist() == [-(2**31), -110]  # R's compact 1:110
    df = data_frame(obj)
    assert list(df) == ["mac", "locality", "anes_cf"]
    assert len(df["mac"]) == len(df["locality"]) == 110
    assert (df["mac"][0], df["locality"][0], df["anes_cf"][0]) == ("10112", "00", 19.77)
    assert df["anes_cf"].dtype == np.float64  # byte-shuffled doubles, unshuffled
    assert df["anes_cf"][:-1].min() > 19 and df["anes_cf"][:-1].max() < 29
    assert all(re.fullmatch(r"\d{5}", m) for m in df["mac"][:-1])
    # The last row is northstar's reading of the CMS file's DOS end-of-file byte: R's NA
    # (a NaN whose payload is 1954) and an NA string come through as such.
    assert (df["mac"][-1], df["locality"][-1]) == ("\x1a", None)
    assert df["anes_cf"][-1:].view(np.uint64)[0] == 0x7FF00000000007A2


def test_qs_reads_integers_and_matches_the_vendored_addon_table() -> None:
    """ncci_aoc.qs (9,528 bytes): an integer column too, and the source of addon.csv."""
    df = data_frame(read_qs(DATA / "ncci_aoc.qs"))
    assert df["aoc_edit_type"].dtype == np.int32
    from_qs = sorted((a, "" if p == "CCCCC" else p, str(t)) for a, p, t in
                     zip(df["add_on_code"], df["primary_code"], df["aoc_edit_type"].tolist(),
                         strict=True))
    with open(CMS / "addon.csv", encoding="utf-8") as f:
        vendored = [tuple(row) for row in list(csv.reader(f))[1:]]
    assert from_qs == vendored


def test_qs_rejects_what_it_cannot_read() -> None:
    good = (DATA / "pfs_anes.qs").read_bytes()
    with pytest.raises(QsError, match="not a qs file"):
        read_qs(b"RDX3\n" + good)
    with pytest.raises(QsError):
        read_qs(good[:-10])  # truncated
    with pytest.raises(QsError, match="unsupported qs header"):
        read_qs(good[:10] + bytes([0x10]) + good[11:])  # lz4 blocks
    with pytest.raises(QsError, match=r"not a data\.frame"):
        data_frame([1, 2])


# --- the vendored files ----------------------------------------------------------------------


def test_version_json_describes_every_file() -> None:
    info = tables.versions()
    files = {p.name for p in CMS.iterdir() if p.name != "VERSION.json"}
    assert set(info["tables"]) == files
    for name, entry in info["tables"].items():
        path = CMS / name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"], name
        assert path.stat().st_size == entry["bytes"], name
        assert entry["licence"] and entry["source"]
        if name.endswith(".csv"):
            assert path.read_text(encoding="utf-8").count("\n") - 1 == entry["rows"], name
    assert info["tables"]["fee_schedule.csv"]["conversion_factor"] == 33.2875
    assert info["tables"]["ncci_ptp_practitioner.npz"]["rows"] == len(tables.ptp_edits())


def test_no_cpt_descriptor_is_shipped() -> None:
    """Descriptions only in hcpcs_level2.csv, and only for Level II codes (letter + 4
    digits): CPT codes (AMA) appear as bare codes."""
    for path in CMS.glob("*.csv"):
        header = path.read_text(encoding="utf-8").split("\n", 1)[0]
        if path.name != "hcpcs_level2.csv":
            assert "desc" not in header, path.name
    assert all(re.fullmatch(r"[A-Z]\d{4}", code) for code in tables.hcpcs_level2())
    with np.load(CMS / "ncci_ptp_practitioner.npz", allow_pickle=False) as npz:
        assert set(npz.files) == {"codes", "column1", "column2", "modifier", "rationale",
                                  "rationales"}


# --- spot checks ---------------------------------------------------------------------------


def test_ncci_ptp_spot_checks() -> None:
    assert tables.ptp_indicator("45380", "45378") == 0
    assert tables.ptp_indicator("93000", "93010") == 1
    assert tables.ptp_indicator("20610", "99213") == 1
    assert tables.ptp_indicator("99214", "99213") == 1
    assert tables.ptp_indicator("45378", "45380") is None  # order matters: column 1 first
    assert tables.ptp_indicator("99213", "J1030") is None
    assert tables.ptp_indicator("NOPE!", "99213") is None


def test_mue_spot_checks() -> None:
    assert tables.mue("36415") == tables.Mue(2, 3, "CMS Policy")
    assert tables.mue("99213").units == 2
    assert tables.mue("ZZZZZ") is None
    assert len(tables.mue_table()) == 14_677
    assert {m.mai for m in tables.mue_table().values()} == {1, 2, 3}


def test_addon_spot_checks() -> None:
    assert tables.is_addon("99417") and not tables.is_addon("99215")
    assert tables.addon_primaries("99417") & {"99205", "99215"}
    assert tables.addon_table()["99417"].edit_type == 1
    assert tables.addon_primaries("0054T") == frozenset()  # type 2: CMS names no primary
    assert tables.addon_table()["0054T"].edit_type == 2
    assert tables.addon_primaries("99213") == frozenset()


def test_fee_schedule_spot_checks() -> None:
    fs = tables.fee_schedule()
    assert fs.conversion_factor == 33.2875
    assert len(fs) == 16_470
    entry = fs.get("99213")
    assert entry == tables.FeeEntry("A", "XXX", 2.73, 1.96)
    assert tables.price("99213") == round(2.73 * 33.2875, 2) == 90.87
    assert tables.price("99213", facility=True) == 65.24
    assert tables.price("93000", facility=True) is None  # CMS: NA in a facility
    assert tables.price("93000") == 14.31
    assert tables.price("G0276") is None and tables.price("G0276", facility=True) == 364.5
    assert tables.price("36415") is None  # zero RVUs: paid under the lab fee schedule
    assert tables.price("XXXXX") is None
    assert fs.get("99417").status == "I"  # Medicare bills G2212 instead


def test_ptp_table_is_packed_sorted_and_complete() -> None:
    ptp = tables.ptp_edits()
    assert len(ptp) == 1_669_820
    keys = np.frombuffer(ptp._keys, dtype=np.uint32)
    assert bool(np.all(keys[1:] > keys[:-1]))  # sorted, no pair twice: bisection is exact
    assert set(ptp._modifier) == {0, 1}  # indicator 9 only marks deleted edits
    assert "45378" in ptp.column2_codes("45380")
    assert ptp.column2_codes("NOPE!") == []
    edit = ptp.edit("20610", "99213")
    assert edit is not None and edit.rationale == "CPT Manual or CMS manual coding instruction"
    assert ptp.edits_among(["99213", "20610", "J1030", "99213"]) == [edit]


def test_hcpcs_level2() -> None:
    codes = tables.hcpcs_level2()
    assert len(codes) == 8_033
    assert codes["J0135"].short_description == "Adalimumab injection"
    assert codes["A0021"].terminated is None and codes["A0021"].added.year == 1985
    assert any(c.terminated for c in codes.values())


def test_mce_edits_and_conflicts() -> None:
    assert tables.mce_edit("O80") == tables.MceEdit("maternity", 9, 64, "F")
    assert tables.mce_edit("N400") == tables.mce_edit("N40.0")
    assert tables.mce_edit("N40.0").sex == "M"
    assert tables.mce_edit("A33").age_edit == "newborn"
    assert tables.mce_edit("E11.9") is None
    assert tables.conflicts("O80", 70, "M") == ["age", "sex"]
    assert tables.conflicts("O80", 30, "F") == []
    assert tables.conflicts("O80", 30, None) == []  # unknown sex trips no sex edit
    assert tables.conflicts("A33", 1, "F") == ["age"]
    assert tables.conflicts("A33", 0, "F") == []
    assert tables.conflicts("E11.9", 3, "M") == []
    ranges = {(e.age_edit, e.min_age, e.max_age) for e in tables.mce_table().values()}
    assert ranges == {(None, None, None), ("newborn", 0, 0), ("pediatric", 0, 17),
                      ("maternity", 9, 64), ("adult", 15, 124)}


def test_the_cms_package_imports_nothing_of_stream() -> None:
    for path in (ROOT / "model" / "cms").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not [n for n in names if n.split(".")[0] == "stream"], path.name


# --- the build script ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def build() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "build_cms_tables", ROOT / "scripts" / "build_cms_tables.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_build_says_in_one_line_what_is_missing(
    build: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert build.main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a directory" in err
    (tmp_path / "ns" / "inst" / "extdata" / "pins").mkdir(parents=True)
    assert build.main([str(tmp_path / "ns"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("build_cms_tables: error: missing pin pfs_rvu_ind")


def test_build_turns_a_pin_into_the_vendored_rows(build: ModuleType, tmp_path: Path) -> None:
    pin = tmp_path / "inst" / "extdata" / "pins" / "ncci_aoc" / "20240620T170255Z-3930c"
    pin.mkdir(parents=True)
    shutil.copy(DATA / "ncci_aoc.qs", pin)
    (pin / "data.txt").write_text("file: ncci_aoc.qs\ndescription: NCCI Add-on Code Edits\n")
    rows = build.addon(build.Northstar(tmp_path))
    with open(CMS / "addon.csv", encoding="utf-8") as f:
        assert [["addon", "primary", "edit_type"], *rows] == list(csv.reader(f))
