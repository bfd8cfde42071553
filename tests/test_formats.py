"""FHIR R4 and X12 837P adapters (model.formats) and the CLI over them.

Round trips on generated claims must give back the very same claim; real samples from
the specifications' examples (tests/data/formats/SOURCES.md) are converted and, where
they can be, scored; hostile inputs become one error per record, never an exception.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fhir.resources.R4B.claim import Claim as FhirClaim
from typer.testing import CliRunner

from model.claims import Claim
from model.formats import ConversionError, References, claim_json, convert, to_fhir, to_x12
from model.generator import ClaimGenerator
from stream.cli import app

DATA = Path(__file__).parent / "data" / "formats"
runner = CliRunner()
GENERATED = [Claim.model_validate(lc.claim)
             for lc in ClaimGenerator(seed=61, fraud_rate=0.3).generate(400)]


def claims_of(results: list) -> list[Claim]:
    assert all(isinstance(r, Claim) for r in results), [str(r) for r in results][:3]
    return results


def errors_of(results: list) -> list[str]:
    return [str(r) for r in results if isinstance(r, ConversionError)]


def odd(claim: Claim) -> Claim:
    """A claim with what the generator never writes: a description, sex U, a fractional
    quantity, a tiny strength, an unknown drug, a micro-second-free odd time zone."""
    med = {"name": "unlisted-drug", "strength_mg": 0.0125, "quantity": 0.5, "days_supply": 7,
           "charge": "3.10"}
    data = json.loads(claim_json(claim)) | {
        "member_sex": "U", "description": "Follow-up; patient reports dizziness",
        "submitted_at": "2026-01-20T23:30:00-05:00",
        "medications": [*json.loads(claim_json(claim))["medications"], med]}
    data["total_charge"] = round(data["total_charge"] + 3.10, 2)
    return Claim.model_validate(data)


# -- round trips ----------------------------------------------------------------------------

def test_fhir_round_trip_gives_back_every_generated_claim():
    ndjson = "".join(json.dumps(to_fhir(c)) + "\n" for c in GENERATED)
    assert claims_of(convert("fhir", ndjson)) == GENERATED


def test_x12_round_trip_gives_back_every_generated_claim():
    assert claims_of(convert("x12", to_x12(GENERATED))) == GENERATED


def test_round_trips_keep_what_the_generator_never_writes():
    claims = [odd(c) for c in GENERATED[:20]]
    assert claims_of(convert("fhir", json.dumps(to_fhir(claims[0])))) == claims[:1]
    assert claims_of(convert("x12", to_x12(claims))) == claims


def test_written_fhir_is_valid_r4_and_written_x12_has_its_envelope():
    for c in GENERATED[:50]:
        FhirClaim.model_validate(to_fhir(c))  # raises if not valid
    text = to_x12(GENERATED[:3])
    assert text.startswith("ISA*") and text.rstrip().endswith("~")
    assert re.search(r"GE\*3\*1~", text) and re.search(r"IEA\*1\*000000001~", text)


def test_writers_refuse_what_the_format_cannot_carry():
    claim = GENERATED[0]
    with pytest.raises(ValueError, match="38"):
        to_x12([claim.model_copy(update={"claim_id": "C" * 40})])
    with pytest.raises(ValueError, match="NUCC"):
        to_fhir(claim.model_copy(update={"provider_specialty": "astrology"}))


# -- FHIR input shapes and drug codes ------------------------------------------------------

def hand() -> dict:
    return json.loads((DATA / "hand-claim.json").read_text())


def test_hand_written_claim_with_contained_patient_and_rxnorm_drug():
    (c,) = claims_of(convert("fhir", json.dumps(hand())))
    assert (c.claim_id, c.member_id, c.provider_id) == ("hand-1", "pat", "doc")
    assert (c.provider_specialty, c.member_sex, c.member_age) == ("family_medicine", "F", 64)
    assert c.place_of_service == "11" and c.diagnoses == ["E11.9", "I10"]
    assert [(p.code, p.units, str(p.charge)) for p in c.procedures] == [("99213", 1, "125.00")]
    (m,) = c.medications
    assert (m.name, m.strength_mg, m.quantity, m.days_supply) == ("metformin", 500.0, 60.0, 30)


def test_unknown_rxnorm_and_ndc_codes_keep_their_code_as_the_name():
    doc = hand()
    doc["item"][1]["productOrService"]["coding"][0]["display"] = "Oral Tablet"
    (c,) = claims_of(convert("fhir", json.dumps(doc)))
    assert c.medications[0].name == "rxnorm:861007"
    doc["item"][1]["productOrService"] = {"coding": [{
        "system": "http://hl7.org/fhir/sid/ndc", "code": "00093-1048-01",
        "display": "Metformin HCl 850 mg tablet"}]}
    (c,) = claims_of(convert("fhir", json.dumps(doc)))
    assert (c.medications[0].name, c.medications[0].strength_mg) == ("metformin", 850.0)


def test_explanation_of_benefit_in_a_bundle_with_its_patient_by_full_url():
    claim = GENERATED[1]
    res = to_fhir(claim)
    patient, practitioner = res.pop("contained")
    eob = {**res, "resourceType": "ExplanationOfBenefit", "outcome": "complete",
           "insurance": [{"focal": True, "coverage": {"display": "unknown"}}],
           "insurer": {"display": "Plan A"}, "patient": {"reference": "urn:uuid:p1"},
           "provider": {"reference": "Practitioner/provider"},
           "total": [{"category": {"coding": [{"code": "submitted"}]},
                      "amount": res["total"]}]}
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "urn:uuid:p1", "resource": patient}, {"resource": practitioner},
        {"resource": eob}]}
    assert claims_of(convert("fhir", json.dumps(bundle))) == [claim]


def test_unmappable_field_names_the_record_and_the_path():
    doc = hand()
    doc["item"][1]["productOrService"] = {"coding": [{"system": "http://example.org/codes",
                                                      "code": "409073007"}]}
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": to_fhir(GENERATED[0])}, {"resource": to_fhir(GENERATED[1])},
        {"resource": doc}]}
    results = convert("fhir", json.dumps(bundle))
    assert results[:2] == GENERATED[:2]  # the broken one sinks no other
    assert errors_of(results) == [
        "claim 3 (hand-1): Bundle.entry[2].resource.item[1].productOrService: no CPT/HCPCS, "
        "RxNorm or NDC coding (codings in http://example.org/codes)"]


def test_reversal_lines_cancel_the_line_they_reverse():
    """An adjusted EOB lists a line, its reversal (negative) and the line again: the claim
    is the line once. A negative line that reverses nothing on the claim is an error."""
    claim = next(c for c in GENERATED if len(c.procedures) >= 1)
    res = to_fhir(claim)
    first = res["item"][0]
    undo = json.loads(json.dumps(first))
    undo["net"]["value"] = -first["net"]["value"]
    res["item"] = [first, undo, *res["item"]]
    assert claims_of(convert("fhir", json.dumps(res))) == [claim]
    res["item"] = [undo, *res["item"][2:]]
    assert "a reversal of more than the claim billed for it" in one_error("fhir",
                                                                          json.dumps(res))


def test_reversals_net_by_service_whole_or_in_part_and_a_void_is_skipped():
    """A reversal may carry its sign on the quantity, or reverse part of a line; a claim
    whose every line is reversed is a void, and a cancelled claim is no claim: both are
    left out with a note, not failed."""
    claim = next(c for c in GENERATED if c.procedures and c.procedures[0].units == 1)
    res = to_fhir(claim)
    first = res["item"][0]
    double = json.loads(json.dumps(first)) | {"quantity": {"value": 2},
                                              "net": {"value": 2 * first["net"]["value"]}}
    back = json.loads(json.dumps(first)) | {"quantity": {"value": -1}}  # sign on quantity
    res["item"] = [double, back, *res["item"][1:]]
    assert claims_of(convert("fhir", json.dumps(res))) == [claim]
    void = to_fhir(claim)
    void["item"] += [json.loads(json.dumps(i)) | {"net": {"value": -i["net"]["value"]}}
                     for i in void["item"]]
    (note,) = convert("fhir", json.dumps(void))
    assert isinstance(note, ConversionError) and note.skipped
    assert "a voided claim" in str(note)
    cancelled = to_fhir(claim) | {"status": "cancelled"}
    (note,) = convert("fhir", json.dumps(cancelled))
    assert note.skipped and note.path == "Claim.status" and "cancelled" in note.message


@pytest.mark.parametrize("fmt", ["fhir", "x12"])
def test_unknown_member_and_provider_round_trip(fmt):
    """Null age and specialty and sex U are written as the formats leave them out (no
    birthDate or DMG, no taxonomy or PRV) and read back as unknown."""
    claim = GENERATED[0].model_copy(update={"member_age": None, "member_sex": "U",
                                            "provider_specialty": None})
    text = json.dumps(to_fhir(claim)) if fmt == "fhir" else to_x12([claim])
    assert claims_of(convert(fmt, text)) == [claim]


# -- real samples ---------------------------------------------------------------------------

def test_real_samples_convert_to_claims_or_to_errors_with_their_paths():
    expect = {
        "bfd-eobReadCarrier.json": "claim 1 (carrier-9991831999): ExplanationOfBenefit.meta."
                                   "lastUpdated: invalid FHIR R4",
        "demo.example1.837": "claim 1 (26463774): 2300.HI01-1: qualifier BK is ICD-9-CM",
        "demo.drug.example10.1.837": "claim 1 (CLMNO12345): 2300.HI01-1: qualifier BK is "
                                     "ICD-9-CM",
        "two-claims-single-provider.837i": "claim 1 (756048Q): 2300.HI01-1: qualifier BK is "
                                           "ICD-9-CM",
    }
    for name, start in expect.items():
        fmt = "fhir" if name.endswith(".json") else "x12"
        err = errors_of(convert(fmt, (DATA / name).read_bytes()))[0]
        assert err.startswith(start), (name, err)
    (c,) = claims_of(convert("x12", (DATA / "demo.example1.icd10.837").read_bytes()))
    assert (c.claim_id, c.member_id, c.member_sex, c.member_age) == \
        ("26463774", "JS00111223333", "M", 33)
    assert [p.code for p in c.procedures] == ["99213", "87070", "99214", "86663"]
    assert str(c.total_charge) == "100.00" and c.diagnoses == ["J02.0", "Z11.59"]


def test_convertible_samples_score(tmp_path):
    for name, fmt in (("demo.example1.icd10.837", "x12"), ("hand-claim.json", "fhir")):
        out = runner.invoke(app, ["score", "--format", fmt, "--device", "cpu",
                                  str(DATA / name)])
        assert out.exit_code == 0, out.output
        (score,) = [json.loads(x) for x in out.stdout.splitlines()]
        assert 0.0 <= score["score"] <= 1.0 and score["explanation"]


# -- hostile input --------------------------------------------------------------------------

def one_error(fmt: str, data: str | bytes) -> str:
    results = convert(fmt, data)
    assert not any(isinstance(r, Claim) for r in results)
    (err,) = errors_of(results)
    return err


def test_hostile_fhir_inputs_become_errors_with_paths():
    assert "resourceType: 'Patient': expected Claim" in one_error(
        "fhir", '{"resourceType": "Patient", "id": "not-a-claim"}')
    assert "invalid FHIR R4: Field required" in one_error(
        "fhir", '{"resourceType": "Claim", "id": "x"}')
    missing = hand()
    missing["contained"] = missing["contained"][1:]
    assert "Claim.patient: reference '#pat' names no contained resource" in \
        one_error("fhir", json.dumps(missing))
    assert "not JSON" in one_error("fhir", '{"resourceType": "Claim",')
    assert one_error("fhir", '{\n "resourceType": "Claim",\n "id": \n}') == (
        "input: not JSON at line 4 column 1: one FHIR resource, a Bundle or NDJSON (one "
        "resource a line) was expected")
    wrong_total = hand() | {"total": {"value": 999, "currency": "USD"}}
    assert one_error("fhir", json.dumps(wrong_total)) == (
        "claim 1 (hand-1): Claim.total: total_charge 999.00 != sum of line charges 137.00")
    assert "not a JSON object" in one_error("fhir", "[1, 2]")
    assert "not UTF-8" in one_error("fhir", b'{"id": "\xff"}')


def test_a_bundle_of_ten_thousand_entries_is_one_error_per_bad_entry():
    junk = [{"resource": {"resourceType": "Claim", "id": f"c{k}"}} for k in range(9_999)]
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": to_fhir(GENERATED[0])}, *junk]}
    results = convert("fhir", json.dumps(bundle))
    assert results[0] == GENERATED[0] and len(results) == 10_000
    assert errors_of(results)[9_998].startswith("claim 10000 (c9998): Bundle.entry[9999]")


def multi_claim_interchange() -> str:
    """The TR3 example with a second claim in the same transaction set, whose SV1 is broken."""
    text = (DATA / "demo.example1.icd10.837").read_text()
    start, end = text.index("CLM*"), text.index("SE*")
    second = text[start:end].replace("CLM*26463774", "CLM*SECOND").replace(
        "SV1*HC:87070*15.00", "SV1*HC:87070*abc", 1)
    count = int(re.search(r"SE\*(\d+)", text).group(1)) + second.count("~")
    return text[:end] + second + re.sub(r"SE\*\d+", f"SE*{count}", text[end:], count=1)


def test_a_broken_claim_in_an_837_costs_only_itself():
    results = convert("x12", multi_claim_interchange())
    assert isinstance(results[0], Claim) and results[0].claim_id == "26463774"
    assert errors_of(results) == [
        "claim 2 (SECOND): 2300.2400[2].SV1.line_item_charge_amount: invalid 837P: Input "
        "should be a valid decimal"]


def test_hostile_x12_inputs_become_errors_with_paths():
    good = to_x12(GENERATED[:3])
    assert "ISA" in one_error("x12", "hello")
    assert "unusable delimiters" in one_error("x12", good.replace("*", "A"))
    mixed = good[:106] + good[106:].replace("*", "|")  # ISA says *, the segments use |
    assert errors_of(convert("x12", mixed))
    assert "truncated" in one_error("x12", good[: len(good) // 2])
    assert "IEA01: says '2'" in one_error("x12", good.replace("IEA*1*", "IEA*2*"))
    assert "GE01: says '9'" in one_error("x12", good.replace("GE*3*", "GE*9*"))
    segments = re.search(r"SE\*(\d+)\*0002", good).group(1)  # what SE01 rightly says
    wrong_se = re.sub(r"SE\*(\d+)\*0002", "SE*99*0002", good)
    results = convert("x12", wrong_se)
    assert [isinstance(r, Claim) for r in results] == [True, False, True]
    assert errors_of(results) == ["claim 2 (C61-00000002): ST 0002.SE01: says '99', the "
                                  f"transaction set has {segments} segments"]
    cut = good.replace("DMG*D8*", "DMG*", 1)  # a truncated segment in claim 1
    assert errors_of(convert("x12", cut))[0].startswith("claim 1 (C61-00000001): ")


def test_a_ten_megabyte_interchange_converts_claim_by_claim():
    # professional claims only: one functional group (837Is would open groups of their own)
    claims = [c for c in GENERATED if c.claim_type == "professional"]
    text = to_x12(claims)
    head, rest = text.split("ST*837*", 1)
    sets, tail = rest.rsplit("GE*", 1)
    n = len(claims)
    times = 10_000_000 // len("ST*837*" + sets) + 1  # the repeated part alone passes 10 MB
    big = (head + ("ST*837*" + sets) * times + "GE*"
           + tail.replace(f"{n}*", f"{times * n}*", 1))
    assert len(big) > 10_000_000
    assert claims_of(convert("x12", big)) == claims * times


def test_a_ten_megabyte_segment_is_an_error_of_its_claim_only():
    text = to_x12(GENERATED[:2])
    huge = text.replace("CLM*C61-00000001*", "CLM*" + "X" * 10_000_000 + "*", 1)
    results = convert("x12", huge)
    assert isinstance(results[1], Claim)
    assert errors_of(results)[0].startswith("claim 1 (XXXX")
    assert len(errors_of(results)[0]) < 1_000  # the error does not echo the input


# -- CLI --------------------------------------------------------------------------------------

def test_convert_writes_contract_jsonl_and_errors_on_stderr(tmp_path):
    path = tmp_path / "claims.ndjson"
    path.write_text(json.dumps(to_fhir(GENERATED[0])) + "\n" +
                    '{"resourceType": "Patient", "id": "p"}\n')
    out = runner.invoke(app, ["convert", "--from", "fhir", str(path)])
    assert out.exit_code == 1
    assert [Claim.model_validate_json(x) for x in out.stdout.splitlines()] == GENERATED[:1]
    assert out.stderr.strip() == ("claim 2 (p): resourceType: 'Patient': expected Claim, "
                                  "ExplanationOfBenefit or a Bundle of them")
    ok = runner.invoke(app, ["convert", "--from", "x12", "-"], input=to_x12(GENERATED[:5]))
    assert ok.exit_code == 0 and len(ok.stdout.splitlines()) == 5


def test_hostile_inputs_are_one_cli_line_per_record_and_exit_1():
    good = to_x12(GENERATED[:3])
    cases = [
        ("fhir", '{"resourceType": "Patient", "id": "x"}', 1),
        ("fhir", '{"resourceType": "Claim", "id": "x"}', 1),
        ("fhir", json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [
            {"resource": {"resourceType": "Claim", "id": f"c{k}"}} for k in range(50)]}), 50),
        ("x12", good.replace("*", "|", 200), 1),
        ("x12", good[:-40], 1),
        ("x12", good.replace("GE*3*", "GE*4*"), 1),
        ("x12", re.sub(r"SE\*\d+\*0001", "SE*2*0001", good), 1),
    ]
    for fmt, text, lines in cases:
        out = runner.invoke(app, ["convert", "--from", fmt, "-"], input=text)
        assert out.exit_code == 1, (fmt, text[:80], out.output)
        assert len(out.stderr.splitlines()) == lines, (fmt, out.stderr)


def test_validate_and_generate_take_a_format(tmp_path):
    for fmt in ("fhir", "x12"):
        gen = runner.invoke(app, ["generate", "--count", "20", "--seed", "3", "--format", fmt])
        assert gen.exit_code == 0
        val = runner.invoke(app, ["validate", "--format", fmt, "-"], input=gen.stdout)
        assert val.exit_code == 0 and "20 claims: 20 valid, 0 invalid" in val.stdout
    bad = runner.invoke(app, ["validate", "--format", "x12", "-"], input="ISA nonsense")
    assert bad.exit_code == 1 and bad.stdout.startswith("input: ISA")
    assert runner.invoke(app, ["convert", "--from", "hl7v2", "-"], input="").exit_code == 2


@pytest.mark.integration
def test_publish_sends_converted_claims_as_contract_json(cli, namespace) -> None:
    from kafka import KafkaConsumer

    text = to_x12(GENERATED[:20])
    r = cli(["publish", "--format", "x12", "-"], namespace, input=text)
    assert r.returncode == 0, r.stderr
    assert "published 20 claims" in r.stderr
    c = KafkaConsumer(namespace.topic_claims, bootstrap_servers=namespace.bootstrap_servers,
                      group_id=None, auto_offset_reset="earliest", consumer_timeout_ms=3000)
    got = [Claim.model_validate_json(m.value) for m in c]
    c.close()
    assert sorted(got, key=str) == sorted(GENERATED[:20], key=str)
    bad = cli(["publish", "--format", "fhir", "-"], namespace,
              input='{"resourceType": "Patient", "id": "p"}')
    assert bad.returncode == 1 and bad.stdout.startswith("claim 1 (p): resourceType")


def test_convert_report_counts_each_source_and_groups_the_reasons(tmp_path):
    """`convert --report` over a directory: sources are its first directories, a file's
    format is read from its content, Patient files are the source's reference data (not
    records), and reasons that differ only in values count as one."""
    a, b = tmp_path / "fhir-src", tmp_path / "x12-src"
    a.mkdir(), b.mkdir()
    good = to_fhir(GENERATED[0])
    patient, practitioner = good.pop("contained")
    good |= {"patient": {"reference": "Patient/p1"}, "provider": {"reference": "Practitioner/d1"}}
    (a / "claim.json").write_text(json.dumps(good))
    (a / "patient.json").write_text(json.dumps(patient | {"id": "p1"}))
    (a / "doctor.json").write_text(json.dumps(practitioner | {"id": "d1"}))
    for k in (1, 2):  # two lines in a local code system: one reason, counted twice
        bad = to_fhir(GENERATED[k])
        bad["item"][0]["productOrService"] = {"coding": [{"system": "http://example.org/codes",
                                                          "code": f"4090730{k}"}]}
        (a / f"local{k}.json").write_text(json.dumps(bad))
    (b / "two.837").write_text(to_x12(GENERATED[3:5]))
    (b / "notes.txt").write_text("neither format")
    out = runner.invoke(app, ["convert", "--report", "--json", str(tmp_path)])
    assert out.exit_code == 0, out.output
    rep = json.loads(out.stdout)
    fh, x = rep["fhir-src"], rep["x12-src"]
    assert (fh["files"], fh["other_files"], fh["records"], fh["converted"], fh["failed"]) == \
        (5, 2, 3, 1, 2)
    (reason, n), = fh["reasons"].items()
    assert n == 2 and "no CPT/HCPCS, RxNorm or NDC coding (codings in http://example" in reason
    assert fh["examples"][reason] == "local1.json record 1"  # where to look
    assert (x["records"], x["converted"], x["failed"]) == (3, 2, 1)
    assert x["reasons"] == {"neither FHIR JSON nor an X12 interchange": 1}
    assert rep["all"]["converted"] == 3 and rep["all"]["converted_share"] == 0.5
    table = runner.invoke(app, ["convert", "--report", str(tmp_path)])
    assert table.exit_code == 0 and "| fhir-src | 5 | 2 | 3 | 1 | 0 | 2 | 33% |" in table.stdout
    assert runner.invoke(app, ["convert", str(a / "claim.json")]).exit_code == 2
    assert runner.invoke(app, ["convert", "--report", str(tmp_path / "none")]).exit_code == 2


@pytest.mark.parametrize("fmt", ["fhir", "x12"])
def test_a_line_billed_in_minutes_stays_minutes(fmt):
    """Anesthesia bills time: X12 SV103 MJ with SV104 = 61 is 61 minutes, not 61 units
    (and a FHIR quantity in UCUM `min` the same); it round-trips as minutes."""
    base = GENERATED[0]
    line = base.procedures[0].model_copy(update={"code": "00840", "units": 1, "minutes": 61})
    claim = base.model_copy(update={"procedures": [line, *base.procedures[1:]]})
    text = json.dumps(to_fhir(claim)) if fmt == "fhir" else to_x12([claim])
    assert ("SV1*HC:00840*" in text and "*MJ*61*" in text) if fmt == "x12" else \
        '"code": "min"' in text
    (got,) = claims_of(convert(fmt, text))
    assert got == claim and (got.procedures[0].units, got.procedures[0].minutes) == (1, 61)
    assert '"minutes": 61' in claim_json(got) and '"minutes"' not in claim_json(base)


def test_a_lookup_that_fails_is_the_callers_error_not_the_claims(tmp_path):
    """Reference data in Redis that cannot be reached must not turn claims into dead
    letters: the error reaches the worker, which retries the batch."""

    class Down(References):
        def _keys(self, ident):
            raise OSError("reference store down")

        _resource = _url_key = _keys

    claim = GENERATED[0].model_copy(update={"member_age": None, "member_sex": "U"})
    with pytest.raises(OSError):
        convert("x12", to_x12([claim]), references=Down())
    with pytest.raises(OSError):  # a set the library cannot parse whole: claim by claim
        convert("x12", multi_claim_interchange(), references=Down())
    res = to_fhir(claim)
    res["patient"] = {"reference": "Patient/elsewhere"}
    with pytest.raises(OSError):
        convert("fhir", json.dumps(res), references=Down())
