"""Member and provider reference data (issue 26): FHIR claims that name their patient and
provider, in every form a reference takes, and ship those resources apart; `--references`
on convert, validate and score. Real samples: the CARIN Blue Button EOBs of the acceptance
data (HL7 examples, CC0), whose Patients and Practitioners are files of their own.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from model.claims import Claim
from model.formats import (
    ConversionError,
    ReferenceDataError,
    References,
    convert,
    to_fhir,
    to_x12,
)
from model.formats.common import age_on, taxonomy_of
from model.generator import ClaimGenerator
from stream.cli import app

CARIN = Path(__file__).resolve().parents[2] / "shared" / "acceptance" / "data" / "carin-bb"
needs_carin = pytest.mark.skipif(not CARIN.is_dir(), reason=f"no {CARIN}")
NPI = "http://hl7.org/fhir/sid/us-npi"
PROVIDER = "https://claimscope.example/fhir/sid/provider-id"
runner = CliRunner()
CLAIM = next(c for lc in ClaimGenerator(seed=261).generate(20)
             if (c := Claim.model_validate(lc.claim)).procedures)


def apart(claim: Claim = CLAIM) -> tuple[dict, dict, dict]:
    """The claim as FHIR with its Patient and Practitioner taken out of `contained`:
    (claim, patient, practitioner), their ids p1 and d1."""
    res = to_fhir(claim)
    patient, practitioner = res.pop("contained")
    return res, patient | {"id": "p1"}, practitioner | {"id": "d1"}


def refs_of(tmp_path: Path, *resources: dict) -> References:
    path = tmp_path / "refs.ndjson"
    path.write_text("".join(json.dumps(r) + "\n" for r in resources))
    return References.load([path])


def converted(res: dict | str, refs: References | None = None) -> Claim:
    got = convert("fhir", res if isinstance(res, str) else json.dumps(res), references=refs)
    assert len(got) == 1 and isinstance(got[0], Claim), [str(x) for x in got]
    return got[0]


def error_of(res: dict, refs: References | None = None) -> ConversionError:
    got = convert("fhir", json.dumps(res), references=refs)
    assert len(got) == 1 and isinstance(got[0], ConversionError), got
    return got[0]


# -- each form of reference ----------------------------------------------------------------

@pytest.mark.parametrize(("patient", "provider"), [
    ("Patient/p1", "Practitioner/d1"),  # relative
    ("Patient/p1/_history/3", "Practitioner/d1/_history/1"),  # a version of it
    ("https://payer.example/fhir/Patient/p1", "https://x.example/R4/Practitioner/d1"),
    (f"Patient?identifier=https://claimscope.example/fhir/sid/member-id|{CLAIM.member_id}",
     f"Practitioner?identifier={PROVIDER}|{CLAIM.provider_id}"),  # conditional
    (f"Patient?identifier={CLAIM.member_id}", "Practitioner?_id=d1"),  # value alone; _id
])
def test_each_form_resolves_through_the_reference_data(tmp_path, patient, provider):
    res, pat, doc = apart()
    res |= {"patient": {"reference": patient}, "provider": {"reference": provider}}
    assert converted(res, refs_of(tmp_path, pat, doc)) == CLAIM


def test_a_logical_reference_by_identifier_resolves(tmp_path):
    res, pat, doc = apart()
    res["provider"] = {"identifier": {"system": PROVIDER, "value": CLAIM.provider_id}}
    res["patient"] = {"reference": "Patient/gone", "identifier": {"value": CLAIM.member_id}}
    assert converted(res, refs_of(tmp_path, pat, doc)) == CLAIM


def test_a_synthea_conditional_npi_reference_picks_the_type_it_names(tmp_path):
    """Synthea: `Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|…`; an Organization
    with the same NPI value is not a Practitioner and does not make it ambiguous."""
    res, pat, doc = apart()
    doc["identifier"] = [{"system": NPI, "value": "1234567893"}]
    org = {"resourceType": "Organization", "id": "o1",
           "identifier": [{"system": NPI, "value": "1234567893"}]}
    res |= {"patient": {"reference": "Patient/p1"},
            "provider": {"reference": f"Practitioner?identifier={NPI}|1234567893"}}
    got = converted(res, refs_of(tmp_path, pat, doc, org))
    assert got.provider_id == "1234567893" and got.provider_specialty == CLAIM.provider_specialty


def test_bundle_fullurls_and_absolute_references_inside_a_bundle():
    res, pat, doc = apart()
    res |= {"patient": {"reference": "urn:uuid:8b1f5c3e-0000-4000-8000-000000000001"},
            "provider": {"reference": "https://h.example/fhir/Practitioner/d1"}}
    pat.pop("id")  # a transaction Bundle's entries often have a fullUrl and no id
    text = json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "urn:uuid:c1", "resource": res},
        {"fullUrl": "urn:uuid:8b1f5c3e-0000-4000-8000-000000000001", "resource": pat},
        {"fullUrl": "https://h.example/fhir/Practitioner/d1", "resource": doc}]})
    assert converted(text) == CLAIM
    doc.pop("id")  # an entry with no id is still Practitioner/d1 by its fullUrl
    res["provider"] = {"reference": "Practitioner/d1"}
    text = json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": res}, {"fullUrl": "urn:uuid:8b1f5c3e-0000-4000-8000-000000000001",
                            "resource": pat},
        {"fullUrl": "https://h.example/fhir/Practitioner/d1", "resource": doc}]})
    assert converted(text) == CLAIM


def test_the_bundle_comes_before_the_reference_data(tmp_path):
    res, pat, doc = apart()
    res |= {"patient": {"reference": "Patient/p1"}, "provider": {"reference": "Practitioner/d1"}}
    older = pat | {"birthDate": "1900-01-01", "gender": "other"}
    text = json.dumps({"resourceType": "Bundle", "type": "collection",
                       "entry": [{"resource": r} for r in (res, pat, doc)]})
    assert converted(text, refs_of(tmp_path, older, doc)) == CLAIM


@pytest.mark.parametrize("form", ["ndjson", "bundle", "array", "one"])
def test_reference_files_in_every_fhir_form(tmp_path, form):
    res, pat, doc = apart()
    res |= {"patient": {"reference": "Patient/p1"}, "provider": {"reference": "Practitioner/d1"}}
    coverage = {"resourceType": "Coverage", "id": "c1"}  # passed over, never an error
    text = {"ndjson": "\n".join(json.dumps(r) for r in (pat, coverage, doc)),
            "bundle": json.dumps({"resourceType": "Bundle", "type": "collection",
                                  "entry": [{"resource": r} for r in (pat, coverage, doc)]}),
            "array": json.dumps([pat, coverage, doc]), "one": json.dumps(pat)}[form]
    (tmp_path / "refs").write_text(text)
    (tmp_path / "doc.json").write_text(json.dumps(doc))
    paths = [tmp_path / "refs"] + ([tmp_path / "doc.json"] if form == "one" else [])
    refs = References.load(paths)
    assert len(refs) == 2 and refs.problems == []
    assert converted(res, refs) == CLAIM


# -- CSV -----------------------------------------------------------------------------------

def test_csv_members_and_providers_age_at_the_service_date(tmp_path):
    res, _, _ = apart()
    day = CLAIM.service_date
    born = day.replace(year=day.year - 40) + dt.timedelta(days=1)  # turns 40 the day after
    (tmp_path / "members.csv").write_text(
        f"id,birth_date,sex\n{CLAIM.member_id},{born.isoformat()},F\n")
    (tmp_path / "providers.csv").write_text(
        f"NPI,Taxonomy\n1234567893,{taxonomy_of(CLAIM.provider_specialty)}\n")
    refs = References.load([tmp_path / "members.csv", tmp_path / "providers.csv"])
    res |= {"patient": {"reference": f"Patient/{CLAIM.member_id}"},
            "provider": {"reference": f"Organization?identifier={NPI}|1234567893"}}
    got = converted(res, refs)
    assert (got.member_id, got.member_age, got.member_sex) == (CLAIM.member_id, 39, "F")
    assert (got.provider_id, got.provider_specialty) == ("1234567893", CLAIM.provider_specialty)
    res["provider"] = {"reference": "Practitioner/1234567893"}  # any provider type, by NPI
    assert converted(res, refs).provider_id == "1234567893"


def test_bad_records_are_reported_not_fatal(tmp_path):
    path = tmp_path / "members.csv"
    path.write_text("id,birth_date,sex\nM1,1950-02-30,F\nM2,1950-01-01,Q\n,1950-01-01,F\n"
                    "M3,1960-05-05,\n")
    refs = References.load([path])
    assert len(refs) == 1
    assert refs.problems == [f"{path} line 2: birth_date '1950-02-30' is not a date "
                             "(YYYY-MM-DD)", f"{path} line 3: sex 'Q': F, M or U",
                             f"{path} line 4: no id"]
    nd = tmp_path / "refs.ndjson"
    nd.write_text('{"resourceType": "Patient", "id": "p1"}\n{not json\n[1]\n'
                  '{"resourceType": "Practitioner"}\n')
    refs = References.load([nd])
    assert len(refs) == 1 and [p.split(": ")[0] for p in refs.problems] == [
        f"{nd} line 2", f"{nd} line 3", f"{nd} line 4"]


@pytest.mark.parametrize(("content", "says"), [
    ("", "empty"),
    ("name,age\nx,3\n", "npi,taxonomy"),
    ('{"resourceType": "Patient", "id": "p1",\n', "not JSON at line"),
    ('{"id": "no resourceType"}', "not a FHIR resource"),
    ('{"resourceType": "Coverage", "id": "c"}', "holds no usable"),
    ("id,birth_date,sex\nM1,yesterday,F\n", "holds no usable"),
    (b"\xff\xfe", "not UTF-8"),
])
def test_a_bad_file_is_one_error_line(tmp_path, content, says):
    path = tmp_path / "refs"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ReferenceDataError) as e:
        References.load([path])
    assert says in str(e.value) and "\n" not in str(e.value) and str(path) in str(e.value)


# -- what does not resolve -----------------------------------------------------------------

def test_a_missing_reference_reads_as_unknown(tmp_path):
    """A member or provider found nowhere is not a reason to drop the claim: it is scored
    with their details unknown, under the id the reference names them by."""
    res, pat, doc = apart()
    res |= {"patient": {"reference": "Patient/p2"}, "provider": {"reference": "Practitioner/d1"}}
    got = converted(res, refs_of(tmp_path, pat, doc))
    assert (got.member_id, got.member_age, got.member_sex) == ("p2", None, "U")
    assert got.provider_specialty == CLAIM.provider_specialty  # d1 is in the reference data
    assert got.unknown == ["member_age", "member_sex"]
    alone = converted(res)
    assert (alone.provider_id, alone.provider_specialty) == ("d1", None)
    assert alone.unknown == ["member_age", "member_sex", "provider_specialty"]
    assert alone.model_copy(update={
        "member_id": CLAIM.member_id, "provider_id": CLAIM.provider_id,
        "member_age": CLAIM.member_age, "member_sex": CLAIM.member_sex,
        "provider_specialty": CLAIM.provider_specialty}) == CLAIM  # the rest is read as ever
    res["patient"] = {"reference": "Patient?identifier=https://payer.example/id|M-7"}
    assert converted(res).member_id == "M-7"


def test_an_ambiguous_or_unsupported_conditional_reference_says_so(tmp_path):
    res, pat, doc = apart()
    twin = pat | {"id": "p9"}
    res |= {"patient": {"reference": f"Patient?identifier={CLAIM.member_id}"},
            "provider": {"reference": "Practitioner/d1"}}
    assert "matches 2 resources" in error_of(res, refs_of(tmp_path, pat, twin, doc)).message
    res["patient"] = {"reference": "Patient?name=Smith"}
    assert "not name=" in error_of(res, refs_of(tmp_path, pat, doc)).message


def test_a_reference_of_the_wrong_type_does_not_resolve(tmp_path):
    res, pat, doc = apart()
    res |= {"patient": {"reference": "Practitioner/d1"}, "provider": {"reference": "Patient/p1"}}
    got = error_of(res, refs_of(tmp_path, pat, doc))
    assert (got.path, got.message) == ("Claim.patient", "reference 'Practitioner/d1' names a "
                                       "Practitioner, where Patient belongs")


def test_the_npi_is_looked_up_in_the_reference_data_first(tmp_path):
    """A provider that states its NPI but no taxonomy (or one that maps to no specialty of
    ours) takes the taxonomy the reference data holds for that NPI."""
    from model.formats.common import NPI

    res = to_fhir(CLAIM)
    doc = res["contained"][1]
    doc.pop("qualification")
    doc["identifier"].append({"system": NPI, "value": "1234567893"})
    assert converted(res).provider_specialty is None
    (tmp_path / "providers.csv").write_text("npi,taxonomy\n1234567893,207RC0000X\n")
    refs = References.load([tmp_path / "providers.csv"])
    assert converted(res, refs).provider_specialty == "cardiology"
    doc["qualification"] = [{"code": {"coding": [{"system": "http://nucc.org/provider-taxonomy",
                                                  "code": "207L00000X"}]}}]  # unmapped
    assert converted(res, refs).provider_specialty == "cardiology"


# -- the CLI -------------------------------------------------------------------------------

def test_convert_and_validate_take_references(tmp_path):
    res, pat, doc = apart()
    res |= {"patient": {"reference": "Patient/p1"}, "provider": {"reference": "Practitioner/d1"}}
    (tmp_path / "claim.json").write_text(json.dumps(res))
    (tmp_path / "patients.ndjson").write_text(json.dumps(pat) + "\n{broken\n")
    (tmp_path / "doctors.json").write_text(json.dumps(doc))
    args = ["--references", str(tmp_path / "patients.ndjson"),
            "--references", str(tmp_path / "doctors.json"), str(tmp_path / "claim.json")]
    out = runner.invoke(app, ["convert", "--from", "fhir", *args])
    assert out.exit_code == 0, out.output
    assert Claim.model_validate_json(out.stdout) == CLAIM
    assert out.stderr.startswith(f"references: skipped {tmp_path / 'patients.ndjson'} line 2")
    out = runner.invoke(app, ["validate", "--format", "fhir", *args])
    assert out.exit_code == 0 and out.stdout.endswith("1 claims: 1 valid, 0 invalid\n")
    assert "--references" in runner.invoke(app, ["score", "--help"]).output


@pytest.mark.parametrize("command", [["convert", "--from", "fhir"],
                                     ["validate", "--format", "fhir"],
                                     ["convert", "--from", "x12"]])
def test_a_bad_references_file_is_one_line_and_exit_2(tmp_path, command):
    (tmp_path / "bad.csv").write_text("garbage\n")
    (tmp_path / "claim.json").write_text("{}")
    out = runner.invoke(app, [*command, "--references", str(tmp_path / "bad.csv"),
                              str(tmp_path / "claim.json")])
    assert out.exit_code == 2
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.output
    assert out.stderr.startswith("error: ")


# -- real data: CARIN Blue Button ----------------------------------------------------------

# of 24 (docs/formats.md, "A corpus of real samples", says why the rest do not)
CARIN_CONVERTED = 20


@needs_carin
def test_real_carin_eobs_resolve_their_references(tmp_path, capsys):
    """Every CARIN EOB's Patient and provider are files of their own. Given them as
    reference data, a claim's member is unknown only where the sample set lacks the
    Patient itself (connDmd EOBs name Patients that are not among its files)."""
    people = [json.loads(p.read_text()) for p in sorted(CARIN.glob("*.json"))]
    refs = refs_of(tmp_path, *[r for r in people if r.get("resourceType") in
                               ("Patient", "Practitioner", "Organization", "Coverage")])
    ids = {f"{r['resourceType']}/{r['id']}" for r in people if "id" in r}
    eobs = [p for p in sorted(CARIN.glob("*.json")) if "searchset" not in p.name
            and '"ExplanationOfBenefit"' in p.read_text()]
    assert len(eobs) >= 20
    before = [convert("fhir", p.read_text()) for p in eobs]
    after = [convert("fhir", p.read_text(), references=refs) for p in eobs]
    ok = [r[0] for r in after if len(r) == 1 and isinstance(r[0], Claim)]
    assert len(ok) >= CARIN_CONVERTED
    alone = [r[0] for r in before if len(r) == 1 and isinstance(r[0], Claim)]
    assert [c.claim_id for c in alone] == [c.claim_id for c in ok]  # references add no claim
    for c, a in zip(ok, alone, strict=True):
        assert "member_age" in a.unknown  # without them no member is known
        if f"Patient/{c.member_id}" in ids or c.member_age is not None:
            continue
        assert "member_age" in c.unknown
    conn = {c.claim_id for p, r in zip(eobs, after, strict=True)
            if p.name.startswith("connDmd") for c in r if isinstance(c, Claim)}
    assert sum("member_age" not in c.unknown for c in ok if c.claim_id not in conn) >= \
        len(ok) - len(conn) - 1
    with capsys.disabled():
        print(f"\nCARIN EOBs: {len(ok)} of {len(eobs)} convert with references; members "
              f"known {sum('member_age' not in c.unknown for c in ok)}")


def test_an_x12_claim_takes_its_provider_and_member_from_the_reference_data(tmp_path):
    """No PRV and no DMG (both situational): the billing NPI's taxonomy and the member's
    birth date and sex come from the reference data, before any PRV; without it, unknown."""
    claim = CLAIM.model_copy(update={"member_age": None, "member_sex": "U",
                                     "provider_specialty": None})
    text = to_x12([claim])
    npi = re.search(r"NM1\*85\*2\*[^~]*\*XX\*(\d{10})~", text)[1]
    born = dt.date(CLAIM.service_date.year - CLAIM.member_age - 1, CLAIM.service_date.month, 1)
    (tmp_path / "members.csv").write_text(f"id,birth_date,sex\n{CLAIM.member_id},{born},"
                                          f"{CLAIM.member_sex}\n")
    code = taxonomy_of(CLAIM.provider_specialty)
    (tmp_path / "providers.csv").write_text(f"npi,taxonomy\n{npi},{code}\n")
    refs = References.load([tmp_path / "members.csv", tmp_path / "providers.csv"])
    (alone,) = convert("x12", text)
    assert alone == claim
    (got,) = convert("x12", text, references=refs)
    assert got == CLAIM.model_copy(update={"member_age": age_on(born, CLAIM.service_date)})
    assert got.unknown == []
    out = runner.invoke(app, ["convert", "--from", "x12", "--references",
                              str(tmp_path / "providers.csv"), "-"], input=text)
    assert out.exit_code == 0 and Claim.model_validate_json(out.stdout).provider_specialty \
        == CLAIM.provider_specialty


def test_reference_data_in_redis_answers_as_in_memory(namespace, tmp_path):
    """What `claimscope reference load` stores, the workers' lookups read back the same as
    the in-memory reference data: by key, by URL, conditionally, by identifier, members and
    taxonomies; `clear` leaves no reference key behind."""
    import redis

    from stream.references import RedisReferences

    _, pat, doc = apart()
    (tmp_path / "members.csv").write_text("id,birth_date,sex\nM-9,1950-02-03,F\n")
    (tmp_path / "providers.csv").write_text("npi,taxonomy\n1234567893,207RC0000X\n")
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "https://payer.example/fhir/Patient/p1", "resource": pat},
        {"resource": doc}]}
    (tmp_path / "people.json").write_text(json.dumps(bundle))
    files = [tmp_path / n for n in ("members.csv", "providers.csv", "people.json")]
    memory = References.load(files)
    client = redis.Redis.from_url(namespace.redis_url)
    stored = RedisReferences(client, namespace.key_prefix)
    assert stored.store(memory) == len(list(memory.entries())) == stored.count()
    people = ("Patient", "Practitioner", "PractitionerRole", "Organization")
    for target in ("Patient/p1", "https://payer.example/fhir/Patient/p1", "Practitioner/d1",
                   f"Patient?identifier=https://claimscope.example/fhir/sid/member-id|"
                   f"{CLAIM.member_id}", "Organization/1234567893", "Patient/none"):
        assert stored.find(target, people) == memory.find(target, people), target
    assert stored.member("M-9") == memory.member("M-9") == (dt.date(1950, 2, 3), "F")
    assert stored.taxonomy("1234567893") == memory.taxonomy("1234567893") == "207RC0000X"
    # a reload that moves an identifier: the old one no longer joins (as in memory)
    moved = pat | {"identifier": [{"system": "https://payer.example/id", "value": "NEW"}]}
    (tmp_path / "again.json").write_text(json.dumps(moved))
    again = References.load([tmp_path / "again.json"])
    stored.store(again)
    for value in (CLAIM.member_id, "NEW"):
        assert stored.by_identifier(None, value, people) == again.by_identifier(
            None, value, people) == ([moved] if value == "NEW" else []), value
    assert stored.clear() > 0 and stored.count() == 0
    assert not list(client.scan_iter(match=f"{namespace.key_prefix}ref:*"))

