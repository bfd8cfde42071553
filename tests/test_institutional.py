"""Institutional claims (issue 26): a facility's claim in the contract (type of bill,
revenue-code lines, ICD-10-PCS procedures), read from FHIR and from X12 837I, written back
to both, and scored. Real samples: CARIN Blue Button's institutional EOBs and an open-source
X12 library's 837I (tests/data/corpus/ORIGINS.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fhir.resources.R4B.claim import Claim as FhirClaim
from pydantic import ValidationError

from model.checks import CheckLimits, CrossClaimChecks, MemoryState, kind
from model.claims import Claim, claim_json, parse_claim
from model.formats import ConversionError, convert, to_fhir, to_x12
from model.generator import ClaimGenerator
from model.scorer import Scorer
from model.tokenizer import ClaimTokenizer
from model.vocabulary import default_vocabulary

CORPUS = Path(__file__).parent / "data" / "corpus"
FORMATS = Path(__file__).parent / "data" / "formats"
HEADER = {"claim_id": "I-1", "member_id": "M-1", "provider_id": "H-1",
          "provider_specialty": None, "member_age": 70, "member_sex": "F",
          "service_date": "2026-01-03", "submitted_at": "2026-01-10T08:00:00Z",
          "diagnoses": ["I21.4", "E78.5"], "claim_type": "institutional"}
INPATIENT = Claim.model_validate(HEADER | {
    "place_of_service": "21", "bill_type": "111", "icd10_pcs": ["4A023N7", "B211YZZ"],
    "revenue_lines": [{"revenue_code": "0120", "units": 3, "charge": 4500},
                      {"revenue_code": "0450", "code": "99284", "units": 1, "charge": 900,
                       "modifiers": ["25"]}],
    "total_charge": 5400})
OUTPATIENT = Claim.model_validate(HEADER | {
    "claim_id": "O-1", "place_of_service": "22", "bill_type": "131",
    "revenue_lines": [{"revenue_code": "0305", "code": "85025", "units": 1, "charge": 13.39},
                      {"revenue_code": "0730", "code": "93005", "units": 3, "charge": 76.56}],
    "total_charge": 89.95})
PROFESSIONAL = Claim.model_validate(next(iter(ClaimGenerator(seed=7).generate(1))).claim)


def claims_of(results: list) -> list[Claim]:
    assert all(isinstance(r, Claim) for r in results), [str(r) for r in results][:3]
    return results


# -- the contract ---------------------------------------------------------------------------

def test_a_professional_claim_is_written_as_before():
    text = claim_json(PROFESSIONAL)
    assert not {"claim_type", "bill_type", "revenue_lines", "icd10_pcs"} & set(json.loads(text))
    assert parse_claim(text) == PROFESSIONAL and PROFESSIONAL.claim_type == "professional"


def test_an_institutional_claim_round_trips_as_contract_json():
    text = claim_json(INPATIENT)
    data = json.loads(text)
    assert data["claim_type"] == "institutional" and data["bill_type"] == "111"
    assert data["revenue_lines"][0]["revenue_code"] == "0120"
    assert parse_claim(text) == INPATIENT


@pytest.mark.parametrize(("change", "message"), [
    ({"procedures": [{"code": "99213", "units": 1, "charge": 10}], "total_charge": 5410},
     "bills revenue_lines, not procedures"),
    ({"revenue_lines": [], "total_charge": 0}, "at least one revenue line"),
    ({"claim_type": "professional"}, "belong to an institutional claim"),
    ({"bill_type": "011"}, "bill_type"),
    ({"icd10_pcs": ["4A023O7"]}, "icd10_pcs"),  # PCS has no letter O
    ({"total_charge": 5000}, "total_charge 5000.00 != sum of line charges 5400.00"),
])
def test_institutional_rules(change, message):
    with pytest.raises(ValidationError, match=message):
        Claim.model_validate(json.loads(claim_json(INPATIENT)) | change)


@pytest.mark.parametrize(("line", "message"), [
    ({"revenue_code": None, "units": 1, "charge": 1, "modifiers": ["25"]},
     "modifiers modify a HCPCS code"),
    ({"revenue_code": "0001", "units": 1, "charge": 1}, "total-charges line"),
    ({"revenue_code": "450", "units": 1, "charge": 1}, "revenue_code"),
])
def test_a_revenue_line_names_a_service(line, message):
    with pytest.raises(ValidationError, match=message):
        Claim.model_validate(json.loads(claim_json(OUTPATIENT)) | {
            "revenue_lines": [line], "total_charge": 1})


# -- how the model reads one ---------------------------------------------------------------

def test_a_revenue_line_reads_as_the_service_its_hcpcs_code_names():
    tok = ClaimTokenizer.from_vocabulary(default_vocabulary())
    tokens, _ = tok.tokens_of(OUTPATIENT)
    procedures = [t for t in tokens if t.field == "procedure"]
    assert [t.parts[0] for t in procedures] == ["85025", "93005"]
    assert procedures[0].value == tok._procedure("85025").value != tok.oov["procedure"]
    (room,) = [t for t in tok.tokens_of(INPATIENT)[0] if t.field == "procedure"
               and t.parts[0].startswith("revenue")]
    assert room.value == tok.ids["procedure"]["[rev 012]"]  # no HCPCS: its revenue group
    assert room.label == "revenue code 0120"
    place = tok.tokens_of(INPATIENT)[0][4]
    assert place.value == tok.ids["place"]["21|facility"] != tok.ids["place"]["21"]
    shuffled = INPATIENT.model_copy(update={"revenue_lines": INPATIENT.revenue_lines[::-1]})
    assert tok.encode([shuffled]).values.tolist() == tok.encode([INPATIENT]).values.tolist()


def test_institutional_claims_are_scored():
    scores = Scorer.load("default", device="cpu").score([INPATIENT, OUTPATIENT])
    assert [s.claim_id for s in scores] == ["I-1", "O-1"]
    assert all(0.0 <= s.score <= 1.0 and s.unknown == ["provider_specialty"] for s in scores)


# -- FHIR -----------------------------------------------------------------------------------

def test_fhir_round_trip_of_institutional_claims():
    for claim in (INPATIENT, OUTPATIENT):
        doc = to_fhir(claim)
        FhirClaim.model_validate(doc)  # valid R4
        assert doc["type"]["coding"][0]["code"] == "institutional"
        assert claims_of(convert("fhir", json.dumps(doc))) == [claim]


def test_carin_institutional_eobs_read_their_revenue_lines():
    path = CORPUS / "carin-bb" / "ExplanationOfBenefit_EOBOutpatientInstitutionalEx1.json"
    (c,) = claims_of(convert("fhir", path.read_text()))
    assert c.claim_type == "institutional" and c.place_of_service == "12"
    # the example repeats each revenue code under the CPT system: no service code
    assert [(r.revenue_code, r.code, str(r.charge)) for r in c.revenue_lines] == [
        ("0551", None, "84.40"), ("0023", None, "0.00")]
    assert c.diagnoses == ["I95.1", "L97.529", "I73.9"]


def test_a_fhir_bill_type_in_subtype_gives_the_place_and_a_line_may_lack_its_revenue_code():
    (c,) = claims_of(convert("fhir", (CORPUS / "fhir-spec" / "Claim-MED-00050.json").read_text()))
    assert (c.bill_type, c.place_of_service) == ("831", "24")  # ambulatory surgical centre
    (line,) = c.revenue_lines
    assert (line.revenue_code, line.code) == (None, "62264")


@pytest.mark.parametrize(("edit", "path", "message"), [
    (lambda d: d["item"][0].update(revenue={"coding": [{"code": "45"}]}),
     "Claim.item[0].revenue", "'45' is no NUBC revenue code"),
    (lambda d: d["supportingInfo"][0]["code"]["coding"][0].update(code="9999"),
     "Claim.supportingInfo[0].code", "no NUBC type of bill"),
    (lambda d: d["item"][0].pop("revenue"),
     "Claim.item[0].productOrService", "no revenue code, nor a CPT/HCPCS coding"),
])
def test_a_broken_institutional_fhir_claim_names_its_defect(edit, path, message):
    doc = to_fhir(INPATIENT)
    edit(doc)
    (err,) = convert("fhir", json.dumps(doc))
    assert isinstance(err, ConversionError) and err.path == path and message in err.message


# -- X12 837I -------------------------------------------------------------------------------

def icd10_837i() -> str:
    """The x12-py 837I sample (tests/data/formats/SOURCES.md), its ICD-9 codes replaced by
    ICD-10-CM ones (every public 837I we found is ICD-9) and a principal ICD-10-PCS code
    added."""
    text = (FORMATS / "two-claims-single-provider.837i").read_text()
    return (text.replace("HI*BK:3669~", "HI*ABK:J189~")
            .replace("HI*BF:4019*BF:79431~", "HI*ABF:I10*ABF:R05*BBR:0BH17EZ:D8:20050315~")
            .replace("HI*BK:30000~", "HI*ABK:F410~"))


def test_an_837i_is_read_as_institutional_claims():
    first, second = claims_of(convert("x12", icd10_837i()))
    assert (first.claim_id, first.claim_type, first.bill_type) == ("756048Q", "institutional",
                                                                    "131")
    assert first.place_of_service == "22"  # hospital outpatient, from the type of bill
    assert first.diagnoses == ["J18.9", "I10", "R05"] and first.icd10_pcs == ["0BH17EZ"]
    assert [(r.revenue_code, r.code, r.units, str(r.charge)) for r in first.revenue_lines] == [
        ("0305", "85025", 1, "13.39"), ("0730", "93005", 3, "76.56")]
    assert (first.member_age, first.member_sex, first.provider_id) == (36, "M", "1234567890")
    assert second.claim_id == "756049Q" and second.diagnoses == ["F41.0"]


def test_generated_facility_claims_round_trip_through_both_formats():
    claims = [Claim.model_validate(i.claim) for i in ClaimGenerator(seed=23, size=3000)
              .generate(3000) if "claim_type" in i.claim]
    assert {c.place_of_service for c in claims} >= {"21", "22", "23"}
    assert claims_of(convert("x12", to_x12(claims))) == claims
    ndjson = "".join(json.dumps(to_fhir(c)) + "\n" for c in claims)
    assert claims_of(convert("fhir", ndjson)) == claims


def test_x12_round_trip_of_institutional_and_professional_claims_together():
    claims = [INPATIENT, PROFESSIONAL, OUTPATIENT]
    text = to_x12(claims)
    # one functional group a run of like transaction sets, each with its own guide (GS08)
    groups = [seg.split("*")[8] for seg in text.split("~") if seg.strip().startswith("GS*")]
    assert groups == ["005010X223A3", "005010X222A2", "005010X223A3"]
    assert "SV2*0120**4500*UN*3~" in text and "DTP*434*RD8*20260103-20260103~" in text
    # the principal procedure in an HI of its own, the others after it (the guide's loops)
    assert "HI*BBR:4A023N7:D8:20260103~HI*BBQ:B211YZZ:D8:20260103~" in text.replace("\n", "")
    assert claims_of(convert("x12", text)) == claims


@pytest.mark.parametrize(("update", "message"), [
    ({"bill_type": None}, "needs the type of bill"),
    ({"place_of_service": "22"}, "type of bill 111 and its lines stand for 21, not 22"),
])
def test_the_837i_writer_refuses_what_it_cannot_carry(update, message):
    with pytest.raises(ValueError, match=message):
        to_x12([INPATIENT.model_copy(update=update)])
    line = OUTPATIENT.revenue_lines[0].model_copy(update={"revenue_code": None})
    with pytest.raises(ValueError, match="needs its revenue code"):
        to_x12([OUTPATIENT.model_copy(update={"revenue_lines": [line]})])


def test_an_837i_facility_type_without_a_place_is_named():
    text = icd10_837i().replace("13:A:1", "41:A:1", 1)  # religious non-medical: no POS
    err = convert("x12", text)[0]
    assert isinstance(err, ConversionError) and err.path == "2300.CLM05-1"
    assert "facility type '41'" in err.message


# -- the generated world --------------------------------------------------------------------

def test_the_world_bills_a_facility_claim_beside_each_clean_hospital_visit():
    items = list(ClaimGenerator(seed=17, fraud_rate=0.1, size=6000).generate(6000))
    facility = [(k, i) for k, i in enumerate(items) if "claim_type" in i.claim]
    assert 0.02 < len(facility) / len(items) < 0.1  # about 4% of claims; docs/model.md
    for k, i in facility:
        c, visit = Claim.model_validate(i.claim), Claim.model_validate(items[k - 1].claim)
        assert i.fraud_pattern == "none" and items[k - 1].fraud_pattern == "none"
        assert (c.member_id, c.service_date, sorted(c.diagnoses)) == (
            visit.member_id, visit.service_date, sorted(visit.diagnoses))
        # its place is its type of bill's (an ER visit's: 131 with an ER line, 0450)
        assert c.place_of_service == visit.place_of_service
        assert c.provider_id.startswith("H")
        if c.place_of_service == "21":  # a stay: room and board a day, no HCPCS codes
            assert c.bill_type == "111" and all(r.code is None for r in c.revenue_lines)
            assert {"0120", "0200"} & {r.revenue_code for r in c.revenue_lines}
        else:  # the visit's services at a facility fee
            assert sorted(r.code for r in c.revenue_lines if r.code) == sorted(
                p.code for p in visit.procedures)  # and at an ER, its fee (0450)
            if c.place_of_service == "23":
                assert "0450" in {r.revenue_code for r in c.revenue_lines}
            assert c.total_charge > sum(p.charge for p in visit.procedures)
    hosted = {i.claim["member_id"] for i in items if i.fraud_pattern == "none"
              and "claim_type" not in i.claim and i.claim["place_of_service"] in ("21", "23")}
    assert hosted and len(facility) >= len(hosted) // 2


def test_a_facility_claim_is_no_second_visit_for_the_velocity_check():
    assert kind(INPATIENT) == "[facility]@21" and kind(PROFESSIONAL).endswith(
        f"@{PROFESSIONAL.place_of_service}")
    limits = CheckLimits(velocity_limit=1)
    assert limits.visits({kind(PROFESSIONAL): 1, kind(INPATIENT): 1}) == 1


def test_a_facility_claim_sent_twice_is_duplicate_billing():
    again = INPATIENT.model_copy(update={"claim_id": "I-2"})
    first, second = CrossClaimChecks(MemoryState()).run([INPATIENT, again])
    assert first == [] and [h.name for h in second] == ["duplicate_billing"]
    assert "claim I-1" in second[0].reason


def test_a_revenue_line_without_a_code_round_trips_and_writes_no_null():
    (c,) = claims_of(convert("fhir", (CORPUS / "fhir-spec" / "Claim-MED-00050.json").read_text()))
    doc = to_fhir(c)
    assert "revenue" not in doc["item"][0] and "null" not in json.dumps(doc)
    assert claims_of(convert("fhir", json.dumps(doc))) == [c]


def test_a_fhir_total_line_is_left_out_and_an_837i_hipps_line_is_its_revenue_code():
    doc = to_fhir(INPATIENT)
    total = json.loads(json.dumps(doc["item"][0]))
    total["revenue"]["coding"][0]["code"] = "0001"
    total["net"]["value"] = 5400.0
    doc["item"].append(total | {"sequence": 3})
    assert claims_of(convert("fhir", json.dumps(doc))) == [INPATIENT]
    text = icd10_837i().replace("SV2*0305*HC:85025*13.39*UN*1.00~",
                                "SV2*0022*HP:RUX11*13.39*UN*1.00~")
    first = claims_of(convert("x12", text))[0]
    assert [(r.revenue_code, r.code) for r in first.revenue_lines] == [
        ("0022", None), ("0730", "93005")]


def test_an_institutional_claim_holds_25_diagnoses_and_837i_carries_them():
    many = [f"E11.{k}" for k in range(10)] + [f"I{n}" for n in range(10, 16)] + [
        "J45.20", "J45.30", "J45.40", "J45.50", "J45.909", "K21.9", "K29.70", "N18.30", "R05.9"]
    claim = INPATIENT.model_copy(update={"diagnoses": many})
    claim = Claim.model_validate(json.loads(claim_json(claim)))
    text = to_x12([claim])
    assert "HI*ABK:E110~" in text and text.count("HI*ABF:") == 2
    assert claims_of(convert("x12", text)) == [claim]
    with pytest.raises(ValidationError, match="a professional claim has at most 12"):
        Claim.model_validate(json.loads(claim_json(PROFESSIONAL)) | {"diagnoses": many[:13]})
