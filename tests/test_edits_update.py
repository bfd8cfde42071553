"""`claimscope edits update`: a quarter's NCCI files, written as CMS publishes them, become
the tables `model.cms.tables` loads. The files are tiny (a handful of rows) but keep CMS's
layouts: the PTP .TXT's copyright and title lines and four-row header, the MUE CSV's quoted
multi-line copyright cell and MAI texts, the AOC file's Julian dates and CCCCC primaries."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from model.cms import tables
from stream.cli import app

runner = CliRunner()

PTP_HEAD = [
    "CPT only copyright 2023 American Medical Association.  All rights reserved.\u00ae" + "\t" * 6,
    "Column1/Column2 Edits" + "\t" * 6,
    "Column 1\tColumn 2\t*=in existence\tEffective\tDeletion\tModifier\tPTP Edit Rationale",
    "\t\tprior to 1996\tDate\tDate\t0=not allowed\t",
    "\t\t\t\t*=no data\t1=allowed\t",
    "\t\t\t\t\t9=not applicable\t",
]
PTP_F1 = [
    "45380\t45378\t\t20000101\t*\t0\tCPT Separate procedure definition",
    "20610\t99213\t\t20090101\t*\t1\tCPT Manual or CMS manual coding instruction",
    "99213\t36415\t\t20050101\t20240701\t1\tStandards of medical/surgical practice",
    "93000\t93005\t*\t19960101\t20200101\t1\tStandards of medical/surgical practice",
    "93000\t93005\t*\t20200101\t*\t0\tMisuse of Column Two code with Column One code",
]
PTP_F2 = ["29881\t29880\t\t20240701\t*\t1\tMutually exclusive procedures"]
MUE = [
    '"CPT codes, descriptions and other data only are copyright 2023 American Medical',
    'Association. All rights reserved.",,,',
    '"HCPCS/',
    'CPT Code","Practitioner Services MUE Values","MUE Adjudication Indicator",'
    '"MUE Rationale"',
    '0001U,1,"2 Date of Service Edit: Policy","Code Descriptor / CPT Instruction"',
    '36415,2,"3 Date of Service Edit: Clinical","Clinical: Data"',
    "J1100,20,1 Line Edit,Prescribing Information",
]
AOC = [
    "CPT only copyright 2023 American Medical Association. All rights reserved." + "\t" * 7,
    "AOC_Edit_Type\tAdd-On_Code\tAOC_DelDT\tPrimary_Code\tPrimary_Code_DelDT\t"
    "AOC_Edit_EffDT\tAOC_Edit_DelDT\tSpecial_Instruction_Notes",
    "1\t22552\t\t22551\t\t2017001\t\t",
    "1\t22552\t\t22554\t\t2017001\t\t",
    "1\t22552\t\t22585\t\t2017001\t2024183\t",  # day 183 of 2024: deleted on July 1
    "2\t0054T\t\tCCCCC\t\t2010001\t\tContractor Defined Primary Codes",
    "3\t99292\t\t99291\t\t2010001\t\t",
]


def _text(lines: list[str]) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode("cp1252")


@pytest.fixture
def cms(tmp_path: Path) -> Path:
    """One quarter's downloads: PTP part 1 zipped (with its .xlsx twin), part 2 unzipped in
    a subfolder, the MUE zip (with the hospital table, not read), the AOC file loose."""
    folder = tmp_path / "cms"
    (folder / "ccipra-v302r0-f2").mkdir(parents=True)
    with zipfile.ZipFile(folder / "medicare-ncci-2024q3-ptp-ccipra-v302r0-f1.zip", "w") as zf:
        zf.writestr("ccipra-v302r0-f1.TXT", _text(PTP_HEAD + PTP_F1))
        zf.writestr("ccipra-v302r0-f1.xlsx", b"PK not read")
    (folder / "ccipra-v302r0-f2" / "ccipra-v302r0-f2.TXT").write_bytes(
        _text(PTP_HEAD + PTP_F2))
    with zipfile.ZipFile(folder / "medicare-ncci-2024-q3-practitioner-mue.zip", "w") as zf:
        zf.writestr("MCR_MUE_PractitionerServices_Eff_07-01-2024.csv", _text(MUE))
        zf.writestr("MCR_MUE_OutpatientHospitalServices_Eff_07-01-2024.csv", b"not read")
    (folder / "AOC_V2024Q3-MCR.txt").write_bytes(_text(AOC))
    return folder


def _update(*args: str):
    return runner.invoke(app, ["edits", "update", *args])


def test_update_reads_cms_layouts(cms: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _update("--from", str(cms), "--out", str(out))
    assert result.exit_code == 0, result.output

    ptp = tables.PtpEdits(out / "ncci_ptp_practitioner.npz")
    assert len(ptp) == 4
    assert ptp.edit("45380", "45378") == tables.PtpEdit(
        "45380", "45378", 0, "CPT Separate procedure definition")
    assert ptp.indicator("20610", "99213") == 1
    assert ptp.indicator("99213", "20610") is None  # column order matters
    assert ptp.indicator("99213", "36415") is None  # deleted on the as-of date
    assert ptp.edit("93000", "93005").modifier == 0  # the window in force, not the old one
    assert ptp.indicator("29881", "29880") == 1  # part 2

    mues = tables.mue_table(out)
    assert mues == {"0001U": tables.Mue(1, 2, "Code Descriptor / CPT Instruction"),
                    "36415": tables.Mue(2, 3, "Clinical: Data"),
                    "J1100": tables.Mue(20, 1, "Prescribing Information")}
    assert tables.addon_table(out) == {
        "22552": tables.AddOn(1, frozenset({"22551", "22554"})),
        "0054T": tables.AddOn(2, frozenset()),
        "99292": tables.AddOn(3, frozenset({"99291"})),
    }

    info = json.loads((out / "VERSION.json").read_text())["tables"]
    entry = info["ncci_ptp_practitioner.npz"]
    assert entry["release"] == "NCCI PTP edits, practitioner services, 2024-07-01 (2024Q3)"
    assert entry["active_on"] == "2024-07-01" and entry["rows"] == 4
    assert [s["file"] for s in entry["source"]] == ["ccipra-v302r0-f1.TXT",
                                                   "ccipra-v302r0-f2.TXT"]
    assert entry["source"][0]["zip"] == "medicare-ncci-2024q3-ptp-ccipra-v302r0-f1.zip"
    assert entry["source"][1]["sha256"] == hashlib.sha256(_text(PTP_HEAD + PTP_F2)).hexdigest()
    assert info["mue_practitioner.csv"]["release"] == (
        "NCCI MUEs, practitioner services, 2024-07-01")
    assert info["addon.csv"]["release"] == "NCCI add-on code edits, 2024Q3"
    assert info["addon.csv"]["rows"] == 4
    for name, e in info.items():
        assert e["sha256"] == hashlib.sha256((out / name).read_bytes()).hexdigest(), name
    assert result.stdout.splitlines()[-1].startswith("ncci_ptp_practitioner.npz: 4 rows")


def test_as_of_picks_the_edits_in_force_that_day(cms: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _update("--from", str(cms), "--out", str(out), "--as-of", "2024-06-30"
                   ).exit_code == 0
    ptp = tables.PtpEdits(out / "ncci_ptp_practitioner.npz")
    assert ptp.indicator("99213", "36415") == 1  # not yet deleted
    assert ptp.indicator("29881", "29880") is None  # not yet in force
    assert tables.addon_table(out)["22552"].primaries == {"22551", "22554", "22585"}


def _one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_bad_input_is_one_line_and_exit_2(cms: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert "is not a directory" in _one_error_line(
        _update("--from", str(tmp_path / "nowhere"), "--out", str(out)))

    (cms / "notes.pdf").write_bytes(b"%PDF")
    assert "notes.pdf: not a CMS NCCI file" in _one_error_line(
        _update("--from", str(cms), "--out", str(out)))
    (cms / "notes.pdf").unlink()

    part2 = cms / "ccipra-v302r0-f2" / "ccipra-v302r0-f2.TXT"
    part2.write_bytes(_text([*PTP_HEAD, "29881\t29880\t\t2024-07-01\t*\t1\tMutually"]))
    line = _one_error_line(_update("--from", str(cms), "--out", str(out)))
    assert "ccipra-v302r0-f2.TXT line 7: dates must be YYYYMMDD" in line
    assert not out.exists()  # nothing written when a file is bad
