"""Codes the contract does not read (issue 26): what a sender coded in SNOMED CT or CVX, a
line that states no amount of its own, an ICD-10-PCS procedure that is not one. Such a
claim is converted and scored with what it says unknown, as an unknown member is; nothing
is guessed into a billing code. Real samples: the CARIN connectathon's Synthea-made EOBs
and CARIN's own institutional examples (tests/data/corpus/carin-bb/ORIGINS.md).
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
import torch
from fhir.resources.R4B.claim import Claim as FhirClaim
from pydantic import ValidationError

from model.checks import CheckLimits, CrossClaimChecks, MemoryState
from model.claims import Claim, claim_json, parse_claim
from model.formats import convert, to_fhir, to_x12
from model.generator import ClaimGenerator
from model.scorer import Scorer
from model.tokenizer import FIELD_ID, ClaimTokenizer
from model.vocabulary import default_vocabulary

CARIN = Path(__file__).parent / "data" / "corpus" / "carin-bb"
SNOMED = "http://snomed.info/sct"
BASE = Claim.model_validate(next(iter(ClaimGenerator(seed=7, fraud_rate=0.0).generate(1))).claim)
PROFESSIONAL = Claim.model_validate({
    "claim_id": "U-1", "member_id": "M-1", "provider_id": "P-1",
    "provider_specialty": "family_medicine", "member_age": 40, "member_sex": "F",
    "service_date": "2026-01-03", "submitted_at": "2026-01-10T08:00:00Z",
    "place_of_service": "11", "diagnoses": None,
    "procedures": [{"code": None, "units": 1, "charge": 120}], "total_charge": 120})
INPATIENT = Claim.model_validate({
    **json.loads(claim_json(PROFESSIONAL)), "claim_id": "U-2", "provider_specialty": None,
    "place_of_service": "21", "claim_type": "institutional", "bill_type": "111",
    "procedures": [], "icd10_pcs": None, "diagnoses": ["I21.4"],
    "revenue_lines": [{"revenue_code": "0120", "units": 3, "charge": None},
                      {"revenue_code": "0250", "units": 2, "charge": None},
                      {"revenue_code": None, "units": 1, "charge": 400}],
    "total_charge": 5000})


def fhir_eob(item: dict, diagnosis: list | None = None, **extra) -> str:
    """A minimal professional EOB with one item."""
    return json.dumps({
        "resourceType": "ExplanationOfBenefit", "id": "E1", "status": "active", "use": "claim",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type",
                             "code": "professional"}]},
        "patient": {"reference": "Patient/p1"}, "created": "2026-01-10",
        "insurer": {"display": "x"}, "provider": {"reference": "Practitioner/d1"},
        "outcome": "complete", "insurance": [{"focal": True, "coverage": {"display": "x"}}],
        **({"diagnosis": diagnosis} if diagnosis is not None else {}),
        "item": [{"sequence": 1, "servicedDate": "2026-01-03",
                  "locationCodeableConcept": {"coding": [{"code": "11"}]}, **item}],
        **extra})


def snomed(code: str) -> dict:
    return {"coding": [{"system": SNOMED, "code": code}]}


# -- the contract ---------------------------------------------------------------------------

def test_unknowns_are_written_null_and_listed():
    for claim in (PROFESSIONAL, INPATIENT):
        data = json.loads(claim_json(claim))
        assert data["diagnoses"] == (None if claim is PROFESSIONAL else ["I21.4"])
        assert parse_claim(claim_json(claim)) == claim
    assert json.loads(claim_json(PROFESSIONAL))["procedures"][0]["code"] is None
    inpatient = json.loads(claim_json(INPATIENT))
    assert inpatient["icd10_pcs"] is None and inpatient["revenue_lines"][0]["charge"] is None
    assert PROFESSIONAL.unknown == ["diagnoses", "services"]
    assert INPATIENT.unknown == ["provider_specialty", "services", "line_charges", "icd10_pcs"]
    assert BASE.unknown == [] and json.loads(claim_json(BASE))["diagnoses"]


@pytest.mark.parametrize(("change", "message"), [
    ({"diagnoses": []}, "at least 1 item"),  # unknown is null, not an empty list
    ({"procedures": [{"code": None, "units": 1, "charge": 120, "modifiers": ["25"]}]},
     "modifiers modify a CPT/HCPCS code"),
    ({"procedures": [{"code": "99213", "units": 1, "charge": None}]}, "charge"),
])
def test_what_stays_invalid(change, message):
    with pytest.raises(ValidationError, match=message):
        Claim.model_validate(json.loads(claim_json(PROFESSIONAL)) | change)
    with pytest.raises(ValidationError, match="diagnoses"):  # the key stays required
        Claim.model_validate({k: v for k, v in json.loads(claim_json(PROFESSIONAL)).items()
                              if k != "diagnoses"})


def test_known_line_charges_may_not_exceed_the_total_and_one_unknown_is_no_unknown():
    data = json.loads(claim_json(INPATIENT)) | {"total_charge": 300}
    with pytest.raises(ValidationError, match=r"total_charge 300\.00 < the known line"):
        Claim.model_validate(data)
    data = json.loads(claim_json(INPATIENT))
    data["revenue_lines"][1]["charge"] = 100
    with pytest.raises(ValidationError, match=r"it is total_charge less the others' \(4500"):
        Claim.model_validate(data)


def test_pcs_unknown_belongs_to_an_institutional_claim():
    with pytest.raises(ValidationError, match="belong to an institutional claim"):
        Claim.model_validate(json.loads(claim_json(PROFESSIONAL)) | {"icd10_pcs": None})


# -- reading FHIR ----------------------------------------------------------------------------

def test_a_snomed_service_and_snomed_findings_read_as_unknown():
    text = fhir_eob({"productOrService": snomed("261352009"), "net": {"value": 20}},
                    diagnosis=[{"sequence": 1, "diagnosisCodeableConcept": snomed("49727002")}])
    (c,) = convert("fhir", text)
    assert isinstance(c, Claim), c
    assert c.diagnoses is None and c.procedures[0].code is None
    assert c.unknown[-2:] == ["diagnoses", "services"]


def test_a_snomed_finding_beside_icd10_is_an_error_not_a_shorter_list():
    dx = [{"sequence": 1, "diagnosisCodeableConcept": snomed("49727002")},
          {"sequence": 2, "diagnosisCodeableConcept": {"coding": [
              {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "R05.9"}]}}]
    (err,) = convert("fhir", fhir_eob({"productOrService": {"coding": [
        {"system": "http://www.ama-assn.org/go/cpt", "code": "99213"}]},
        "net": {"value": 90}}, diagnosis=dx))
    assert not isinstance(err, Claim)
    assert err.path == "ExplanationOfBenefit.diagnosis[0].diagnosisCodeableConcept"
    assert "cannot say that one of a claim's diagnoses is unknown" in err.message


def test_a_line_of_unknown_code_keeps_its_minutes_and_its_modifiers_stay_an_error():
    timed = {"productOrService": snomed("399097000"), "net": {"value": 300},
             "quantity": {"value": 61, "unit": "min"}}
    (c,) = convert("fhir", fhir_eob(timed))
    assert isinstance(c, Claim), c
    assert (c.procedures[0].code, c.procedures[0].units, c.procedures[0].minutes) == \
        (None, 1, 61)
    (err,) = convert("fhir", fhir_eob(timed | {"modifier": [{"coding": [{"code": "25"}]}]}))
    assert "modifiers modify a CPT/HCPCS code" in str(err)


def test_a_revenue_line_without_hcpcs_keeps_its_modifiers_for_the_contract_to_judge():
    doc = to_fhir(INPATIENT.model_copy(update={"icd10_pcs": []}))
    doc["item"][0]["modifier"] = [{"coding": [{"code": "25"}]}]
    (err,) = convert("fhir", json.dumps(doc))
    assert "modifiers modify a HCPCS code" in str(err)


@pytest.mark.parametrize(("service", "message"), [
    ({"coding": [{"code": "1200"}]}, "codings in no system"),  # no system: no code
    ({"coding": [{"system": "http://example.org/fhir/oralservicecodes", "code": "1200"}]},
     "oralservicecodes"),
])
def test_a_code_in_no_system_or_an_example_one_is_still_an_error(service, message):
    (err,) = convert("fhir", fhir_eob({"productOrService": service, "net": {"value": 20}}))
    assert not isinstance(err, Claim) and message in str(err)


def test_icd9_is_still_refused():
    dx = [{"sequence": 1, "diagnosisCodeableConcept": {"coding": [
        {"system": "http://hl7.org/fhir/sid/icd-9-cm", "code": "786.2"}]}}]
    (err,) = convert("fhir", fhir_eob({"productOrService": snomed("1"), "net": {"value": 5}},
                                       diagnosis=dx))
    assert "ICD-9" in str(err)


def test_carin_institutional_examples_without_product_or_service_and_line_amounts():
    """CARIN's inpatient examples: items with a revenue code and no productOrService (R4
    requires it), amounts on the claim only, and the revenue code 0301 as the principal
    ICD-10-PCS procedure."""
    (c,) = convert("fhir", (CARIN / "ExplanationOfBenefit_ExampleInpatientInstitutionalEOB1.json"
                            ).read_text())
    assert isinstance(c, Claim), c
    assert all(r.code is None and r.revenue_code for r in c.revenue_lines)
    (c,) = convert("fhir", (CARIN / "ExplanationOfBenefit_InpatientEOBExample1.json").read_text())
    assert isinstance(c, Claim), c
    assert {r.charge for r in c.revenue_lines} == {None} and c.total_charge == Decimal("7147.20")
    assert c.unknown[-1] == "line_charges" and c.icd10_pcs == ["4A023N7", "B211YZZ", "B215YZZ"]
    (c,) = convert("fhir", (CARIN / "ExplanationOfBenefit_EOBInpatientInstitutionalEx1.json"
                            ).read_text())
    assert isinstance(c, Claim) and c.icd10_pcs is None and "icd10_pcs" in c.unknown


def test_the_connectathon_eobs_convert_with_what_they_do_not_say_unknown():
    (c,) = convert("fhir", (CARIN / "connDmdEOBInpatient1.json").read_text())
    assert isinstance(c, Claim), c
    assert c.claim_type == "institutional" and c.diagnoses is None
    assert [(r.revenue_code, r.code, r.charge, r.units) for r in c.revenue_lines] == [
        (None, None, None, 1)] * 2  # SNOMED services, quantity 0 read as not stated
    (err,) = convert("fhir", (CARIN / "connDmdEOBInpatient2.json").read_text())
    assert "productOrService" in str(err)  # an item with no code at all stays an error


def test_a_reversal_of_a_line_of_unknown_code_cannot_be_netted():
    text = fhir_eob({"productOrService": snomed("261352009"), "net": {"value": -20}})
    (err,) = convert("fhir", text)
    assert "what it reverses cannot be told" in str(err)


def test_a_reversal_beside_a_line_of_unknown_code_nets_and_keeps_that_line():
    cpt = {"productOrService": {"coding": [{"system": "http://www.ama-assn.org/go/cpt",
                                            "code": "99213"}]}}
    doc = json.loads(fhir_eob({**cpt, "net": {"value": 90}}))
    base = doc["item"][0]
    doc["item"] = [base, {**base, "sequence": 2, "net": {"value": -90}},
                   {**base, "sequence": 3, "net": {"value": 90}},
                   {**base, "sequence": 4, "productOrService": snomed("261352009"),
                    "net": {"value": 20}}]
    doc["diagnosis"] = [{"sequence": 1, "diagnosisCodeableConcept": {"coding": [
        {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "R05.9"}]}}]
    (c,) = convert("fhir", json.dumps(doc))
    assert isinstance(c, Claim), c
    assert [(p.code, str(p.charge)) for p in c.procedures] == [("99213", "90.00"),
                                                              (None, "20.00")]


def test_one_line_without_an_amount_is_the_total_less_the_others():
    doc = to_fhir(INPATIENT.model_copy(update={"icd10_pcs": []}))
    assert "net" not in doc["item"][1]  # the 0250 line: unknown, with the 0120 line's given
    doc["item"][0]["net"] = {"value": 1000, "currency": "USD"}
    (c,) = convert("fhir", json.dumps(doc))
    assert isinstance(c, Claim), c
    assert [str(r.charge) for r in c.revenue_lines] == ["1000.00", "3600.00", "400.00"]


# -- writing ---------------------------------------------------------------------------------

def test_fhir_writes_unknowns_as_unknown_and_reads_them_back():
    for claim in (PROFESSIONAL, INPATIENT):
        doc = to_fhir(claim)
        FhirClaim.model_validate(doc)  # valid R4
        (back,) = convert("fhir", json.dumps(doc))
        assert back == claim


def test_x12_refuses_a_claim_with_unknown_codes_by_name():
    with pytest.raises(ValueError, match="diagnoses, services unknown"):
        to_x12([PROFESSIONAL])
    with pytest.raises(ValueError, match="line_charges, icd10_pcs unknown"):
        to_x12([INPATIENT.model_copy(update={"revenue_lines": INPATIENT.revenue_lines[:2]})])


# -- how the model and the checks read them --------------------------------------------------

def test_unknowns_read_as_their_fields_unknown_tokens():
    tok = ClaimTokenizer.from_vocabulary(default_vocabulary())
    tokens, _ = tok.tokens_of(PROFESSIONAL)
    by_field = {t.field: t for t in tokens}
    assert by_field["diagnosis"].value == tok.oov["diagnosis"]
    assert by_field["procedure"].value == tok.oov["procedure"]
    assert by_field["proc_charge"].value == tok.oov["proc_charge"]  # no code: no price
    assert by_field["diagnosis"].label == "diagnoses unknown"
    tokens, _ = tok.tokens_of(INPATIENT)
    assert [t.label for t in tokens if t.field == "proc_charge"] == [
        "line charge unknown"] * 3  # two charges unknown, and the line of unknown service


def test_an_unknown_diagnosis_is_never_called_missing():
    """A drug no diagnosis on the claim treats is named so; with the diagnoses unknown,
    nothing is said to be missing."""
    from model.explain import medical_cause
    tok = ClaimTokenizer.from_vocabulary(default_vocabulary())
    fill = {"name": "metformin", "strength_mg": 500.0, "quantity": 60.0, "days_supply": 30,
            "charge": 12}
    known = Claim.model_validate(json.loads(claim_json(PROFESSIONAL)) | {
        "diagnoses": ["J02.9"], "procedures": [], "medications": [fill], "total_charge": 12})
    for claim, said in ((known, True), (known.model_copy(update={"diagnoses": None}), False)):
        tokens, _ = tok.tokens_of(claim)
        drug = next(t for t in tokens if t.field == "drug")
        cause = medical_cause(tokens, drug, default_vocabulary())
        assert (cause is not None and "no diagnosis on the claim" in cause) == said, cause
    (s,) = Scorer.load("default", device="cpu").score([known.model_copy(
        update={"diagnoses": None})])
    assert "no diagnosis on the claim" not in s.explanation.reason
    assert s.unknown == ["diagnoses"]


def test_the_shipped_checkpoint_keeps_what_training_blanked():
    """The unknown tokens training writes have vectors; `dx:[OOV]`, never shown, is zero
    (unknown diagnoses add nothing: docs/formats.md)."""
    from model.checkpoint import load_checkpoint
    ck = load_checkpoint("default")
    norm = ck.model.value.weight.detach().norm(dim=1)
    i = ck.tokenizer.index
    for t in ("age:[OOV]", "spec:[OOV]", "sex:U", "proc:[OOV]", "charge:[OOV]"):
        assert norm[i[t]] > 0, t
    assert norm[i["dx:[OOV]"]] == 0


def test_lines_of_unknown_code_are_no_duplicates():
    checks = CrossClaimChecks(MemoryState(), CheckLimits(30, 10, {}, frozenset()))
    twin = PROFESSIONAL.model_copy(update={"claim_id": "U-9"})
    hits = checks.run([PROFESSIONAL, twin])
    assert not any(h.name == "duplicate_billing" for hs in hits for h in hs)


def test_training_blanks_a_lines_code_with_its_price_and_keeps_what_it_blanks_in():
    from model.dataset import ClaimSet
    from model.tokenizer import MAX_TOKENS
    from model.training import Replacer
    tok = ClaimTokenizer.from_vocabulary(default_vocabulary())
    claims = [Claim.model_validate(it.claim)
              for it in ClaimGenerator(seed=3, fraud_rate=0.0).generate(200)]
    enc = tok.encode(claims)
    v, f = (np.zeros((len(claims), MAX_TOKENS), np.int64) for _ in range(2))
    v[:, :enc.values.shape[1]], f[:, :enc.fields.shape[1]] = enc.values, enc.fields
    data = ClaimSet(claims, np.array(["none"] * len(claims)), v, f)
    r = Replacer(tok, default_vocabulary(), data, blank=0.5)
    bv, bf = data.batch(np.arange(len(claims)))
    out = r.blank(bv, bf, torch.Generator().manual_seed(0)).numpy()
    bv, bf = bv.numpy(), bf.numpy()
    procs = bf == FIELD_ID["procedure"]
    code = procs & (out == tok.oov["procedure"])
    assert 0.3 < code.sum() / procs.sum() < 0.7
    price_of_blanked = np.roll(code, 2, axis=1) & (bf == FIELD_ID["proc_charge"])
    assert price_of_blanked.any() and (out[price_of_blanked] == tok.oov["proc_charge"]).all()
    lines = procs | (bf == FIELD_ID["proc_charge"])
    header = np.isin(bf, [FIELD_ID[x] for x in ("age", "sex", "specialty")])
    assert ((out != bv) <= (lines | header)).all()  # nothing else is blanked
    # the unknown tokens it writes are tokens training shows: forget_unseen keeps them
    assert {tok.oov["procedure"], tok.oov["proc_charge"], tok.oov["age"],
            tok.oov["specialty"]} <= set(r.seen.tolist())


def test_a_pcs_code_that_is_none_reads_as_unknown_pcs():
    doc = to_fhir(INPATIENT.model_copy(update={"icd10_pcs": ["4A023N7"]}))
    doc["procedure"][0]["procedureCodeableConcept"]["coding"][0]["code"] = "0301"
    (c,) = convert("fhir", json.dumps(doc))
    assert isinstance(c, Claim) and c.icd10_pcs is None


def test_training_blanks_lines_where_there_is_no_label_only(monkeypatch):
    """A labelled fraud's blanked line is often its evidence: the labelled batch blanks
    header fields only, the self-supervised batch lines too (docs/model.md)."""
    from model.training import Replacer, TrainConfig, train
    calls: list[bool] = []
    blank = Replacer.blank

    def spy(self, values, fields, gen, lines=True):
        calls.append(lines)
        return blank(self, values, fields, gen, lines)

    monkeypatch.setattr(Replacer, "blank", spy)
    train(TrainConfig(steps=2, train_count=1000, val_count=400, eval_every=3),
          log=lambda _: None)
    assert calls[:4] == [False, True, False, True]  # per step: labelled, then unlabelled
