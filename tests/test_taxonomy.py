"""NUCC provider taxonomy -> specialty (model/taxonomy.py) and the adapters that read it.

The vendored table is NUCC's whole code set; every code reads as one of our specialties or
as unknown, by the rules in model/taxonomy.py; the codes the adapters took before read as
they did; X12 and FHIR claims carrying a code that used to be refused now convert.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

from model import taxonomy
from model.claims import Claim
from model.formats import convert, to_fhir, to_x12
from model.generator import ClaimGenerator
from model.vocabulary import default_vocabulary

ROOT = Path(__file__).resolve().parents[1]
CLAIMS = [Claim.model_validate(lc.claim)
          for lc in ClaimGenerator(seed=61, fraud_rate=0.3).generate(40)]

# What the adapters read before the whole code set: the writers' 27 codes and 6 neighbours.
BEFORE = {
    **{code: name for name, code in {
        "family_medicine": "207Q00000X", "internal_medicine": "207R00000X",
        "pediatrics": "208000000X", "endocrinology": "207RE0101X", "cardiology": "207RC0000X",
        "pulmonology": "207RP1001X", "orthopedics": "207X00000X", "psychiatry": "2084P0800X",
        "neurology": "2084N0400X", "nephrology": "207RN0300X", "urology": "208800000X",
        "obstetrics_gynecology": "207V00000X", "gastroenterology": "207RG0100X",
        "dermatology": "207N00000X", "oncology": "207RX0202X",
        "infectious_disease": "207RI0200X", "emergency_medicine": "207P00000X",
        "radiology": "2085R0202X", "ophthalmology": "207W00000X",
        "otolaryngology": "207Y00000X", "rheumatology": "207RR0500X",
        "physical_therapy": "225100000X", "general_surgery": "208600000X",
        "laboratory": "291U00000X", "pathology": "207ZP0102X", "pharmacy": "333600000X",
        "dme_supplier": "332B00000X"}.items()},
    "208D00000X": "family_medicine", "207QA0505X": "family_medicine",
    "207RH0003X": "oncology", "207ZP0101X": "pathology", "207ZP0105X": "pathology",
    "3336C0003X": "pharmacy",
}


def test_the_vendored_table_is_the_whole_nucc_code_set():
    rows = taxonomy.table()
    assert len(rows) >= 800
    assert all(re.fullmatch(r"[0-9]{3}[0-9A-Z]{6}X", code) for code in rows)
    with taxonomy.TABLE.open(encoding="utf-8") as f:
        assert next(csv.reader(f)) == ["code", "grouping", "classification", "specialization"]
    t = taxonomy.lookup("207RC0000X")
    assert (t.grouping, t.classification, t.specialization) == (
        "Allopathic & Osteopathic Physicians", "Internal Medicine", "Cardiovascular Disease")
    assert taxonomy.lookup(" 207rc0000x ") == t  # as payers send it
    assert taxonomy.lookup("203BF0100Y") is None  # the X12 guide's made-up example


def test_every_code_reads_as_a_specialty_we_score_or_as_unknown():
    ours = set(default_vocabulary().specialties)
    got = {name for _, name in taxonomy.table().values()}
    assert got - {None} <= ours
    assert ours <= got  # every specialty is reachable


def test_the_codes_read_before_read_as_before():
    assert {code: taxonomy.specialty(code) for code in BEFORE} == BEFORE
    for name, code in taxonomy.CANONICAL.items():  # writers' codes read back
        assert taxonomy.specialty(code) == name


def test_real_codes_from_the_wild_read_by_the_rules():
    assert taxonomy.specialty("261QR0405X") == "psychiatry"  # substance use rehab clinic
    assert taxonomy.specialty("251S00000X") == "psychiatry"  # community behavioural health
    assert taxonomy.specialty("204C00000X") == "orthopedics"  # sports medicine
    assert taxonomy.specialty("207L00000X") is None  # anesthesiology: nothing of ours fits
    assert taxonomy.specialty("2080P0202X") == "cardiology"  # pediatric cardiology
    assert taxonomy.specialty("207ZH0000X") == "pathology"  # hematopathology (exception)
    assert taxonomy.specialty("363LF0000X") == "family_medicine"  # family NP
    assert taxonomy.specialty("261QU0200X") == "family_medicine"  # urgent care
    assert taxonomy.specialty("3336S0011X") == "pharmacy"  # specialty pharmacy
    assert taxonomy.specialty("282N00000X") is None  # general acute care hospital
    assert taxonomy.describe("207L00000X") == "Allopathic & Osteopathic Physicians / " \
                                              "Anesthesiology"


def test_the_rules_name_only_real_levels():
    levels = list(t for t, _ in taxonomy.table().values())
    assert set(taxonomy.EXCEPTIONS) <= {t.code for t in levels}
    assert set(taxonomy.SPECIALIZATION) <= {
        t.specialization for t in levels if t.grouping in taxonomy.SPECIALIZATION_GROUPINGS}
    assert set(taxonomy.CLASSIFICATION) <= {t.classification for t in levels}
    assert set(taxonomy.GROUPING) <= {t.grouping for t in levels}
    # a classification name the table keys on belongs to one grouping only
    for name in taxonomy.CLASSIFICATION:
        assert len({t.grouping for t in levels if t.classification == name}) == 1, name


def test_the_build_script_rebuilds_the_table_from_nucc_csv(tmp_path):
    """NUCC's own CSV shape (its columns, a BOM, definitions) in, the vendored file out."""
    source = tmp_path / "nucc_taxonomy_251.csv"
    with source.open("w", encoding="utf-8-sig", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Code", "Grouping", "Classification", "Specialization", "Definition",
                    "Notes", "Display Name", "Section"])
        for t, _ in taxonomy.table().values():
            w.writerow([*t, "A definition, with a comma.", "[7/1/2025: new]", "x", "Individual"])
    out = tmp_path / "out.csv"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_nucc_taxonomy.py"),
                           str(source), "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == taxonomy.TABLE.read_bytes()
    assert "(unknown)" in done.stdout


# -- through the adapters -------------------------------------------------------------------

def with_code(claim: Claim, old: str, new: str) -> tuple[str, str]:
    """The claim written as X12 and as FHIR, its provider's taxonomy swapped."""
    x12 = to_x12([claim])
    fhir = json.dumps(to_fhir(claim))
    assert x12.count(f"PRV*BI*PXC*{old}~") == 1 and fhir.count(f'"code": "{old}"') == 1
    return (x12.replace(f"PRV*BI*PXC*{old}~", f"PRV*BI*PXC*{new}~"),
            fhir.replace(f'"code": "{old}"', f'"code": "{new}"'))


def test_newly_covered_codes_convert_in_x12_and_fhir():
    for specialty, new in [("psychiatry", "261QR0405X"), ("psychiatry", "251S00000X"),
                           ("family_medicine", "363LF0000X"), ("oncology", "2080P0207X")]:
        claim = next(c for c in CLAIMS if c.provider_specialty == specialty)
        x12, fhir = with_code(claim, taxonomy.CANONICAL[specialty], new)
        assert convert("x12", x12) == [claim], new
        assert convert("fhir", fhir) == [claim], new


def test_a_code_without_a_specialty_reads_as_an_unknown_specialty():
    """Anesthesiology has no specialty of ours, 207Z99999X is no NUCC code, and a claim
    without PRV names none: each claim is still read, its specialty unknown."""
    claim = CLAIMS[0]
    for code in ("207L00000X", "207Z99999X"):
        x12, fhir = with_code(claim, taxonomy.CANONICAL[claim.provider_specialty], code)
        for fmt, text in [("x12", x12), ("fhir", fhir)]:
            (got,) = convert(fmt, text)
            assert isinstance(got, Claim), str(got)
            assert got == claim.model_copy(update={"provider_specialty": None}), fmt
            assert got.unknown == ["provider_specialty"]
