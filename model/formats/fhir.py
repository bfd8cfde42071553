"""FHIR R4 Claim / ExplanationOfBenefit <-> the claim contract.

Every resource is validated with `fhir.resources` before it is mapped. Its R4 models are
what this project uses; the release that installs is 8.x, whose R4-family models live in
`fhir.resources.R4B` (FHIR 4.3, which kept Claim and ExplanationOfBenefit as in 4.0.1
apart from additions we do not read), so R4 resources validate against R4B here.

Input is one resource, a Bundle of them, or NDJSON (one resource a line, the bulk-data
convention). Each Claim or ExplanationOfBenefit is one record: a Bundle is never validated
as a whole, so one broken entry costs only itself. docs/formats.md has the mapping table.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.claim import Claim as FhirClaim
from fhir.resources.R4B.explanationofbenefit import ExplanationOfBenefit
from pydantic import ValidationError

from model.claims import (
    BILL_TYPE_PATTERN,
    ICD10PCS_PATTERN,
    PROCEDURE_PATTERN,
    REVENUE_PATTERN,
    TOTAL_REVENUE_CODE,
    Claim,
)
from model.facility import place_of_bill
from model.formats.common import (
    CLAIMSCOPE_FHIR,
    MEMBER,
    NPI,
    NUCC,
    UNKNOWN_STRENGTH_MG,
    ConversionError,
    Unmappable,
    age_on,
    birth_date_for,
    dotted_icd10,
    drug_from_text,
    drug_text,
    finish,
    money,
    specialty_of,
    strength_in,
    taxonomy_of,
    usual_days_supply,
)
from model.formats.references import PEOPLE, TAIL, References

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
# Diagnoses: ICD-10-CM's URI and OID, and WHO ICD-10's, under which payers send ICD-10-CM
# codes too; the contract's ICD-10-CM pattern then judges the code itself.
ICD10_SYSTEMS = frozenset({ICD10CM, "urn:oid:2.16.840.1.113883.6.90",
                           "http://hl7.org/fhir/sid/icd-10", "urn:oid:2.16.840.1.113883.6.3"})
ICD9_SYSTEMS = frozenset({"http://hl7.org/fhir/sid/icd-9-cm", "http://hl7.org/fhir/sid/icd-9",
                          "urn:oid:2.16.840.1.113883.6.103", "urn:oid:2.16.840.1.113883.6.42"})
CPT = "http://www.ama-assn.org/go/cpt"
HCPCS = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
PROCEDURE_SYSTEMS = frozenset({
    CPT, HCPCS, "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
    "urn:oid:2.16.840.1.113883.6.12", "urn:oid:2.16.840.1.113883.6.285",  # CPT, HCPCS OIDs
    "https://bluebutton.cms.gov/resources/codesystem/hcpcs",  # CMS Blue Button: CPT + HCPCS
})
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
NDC = "http://hl7.org/fhir/sid/ndc"
# ClaimScope's own slots, for what FHIR has no element for (common.CLAIMSCOPE_FHIR).
DRUG = f"{CLAIMSCOPE_FHIR}/CodeSystem/drug"  # code = vocabulary name, display = "name 500 MG"
DAYS_SUPPLY = f"{CLAIMSCOPE_FHIR}/StructureDefinition/days-supply"  # on Claim.item
PROVIDER = f"{CLAIMSCOPE_FHIR}/sid/provider-id"
DRUG_SYSTEMS = {DRUG: "", RXNORM: "rxnorm", NDC: "ndc"}  # system -> unknown-name prefix
POS = "https://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set"
CLAIM_TYPE = "http://terminology.hl7.org/CodeSystem/claim-type"
CARIN_CLAIM_TYPE = "http://hl7.org/fhir/us/carin/CodeSystem/carin-bb-claim-type"
INFO = "http://terminology.hl7.org/CodeSystem/claiminformationcategory"
# A facility's claim: R4's claim type, CARIN Blue Button's inpatient and outpatient ones
INSTITUTIONAL = {(CLAIM_TYPE, "institutional"), (CARIN_CLAIM_TYPE, "inpatient-facility"),
                 (CARIN_CLAIM_TYPE, "outpatient-facility")}
REVENUE = "https://www.nubc.org/CodeSystem/RevenueCodes"
BILL_TYPE = "https://www.nubc.org/CodeSystem/TypeOfBill"
BILL_TYPE_SYSTEMS = frozenset({BILL_TYPE, "https://www.cms.gov/codes/billtype"})
# CARIN Blue Button's supportingInfo category of the type of bill
BILL_TYPE_INFO = "typeofbill"
SUPPORTING_INFO = "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBSupportingInfoType"
PCS = "http://www.cms.gov/Medicare/Coding/ICD10"
# What a code the sender wrote in a real clinical terminology the contract does not read
# is: unknown (model.claims), never guessed into a billing code. EHR-made claims (Synthea's,
# the CARIN connectathon's) code services and findings in SNOMED CT, vaccines in CDC's CVX.
# A code in no system, or in an example or local one, is no code: an error, as before.
SNOMED = "http://snomed.info/sct"
CLINICAL_SYSTEMS = frozenset({SNOMED, "http://hl7.org/fhir/sid/cvx"})
DATA_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
# what the writer puts where the contract says a code is unknown
UNKNOWN_CODE = {"coding": [{"system": DATA_ABSENT, "code": "unknown"}]}
# productOrService of a revenue line that names no service code (R4 requires the element)
NOT_APPLICABLE = {"coding": [{"system": DATA_ABSENT, "code": "not-applicable"}]}
# ICD-10-PCS: CMS's URI (CARIN Blue Button's), HL7's and the OID
PCS_SYSTEMS = frozenset({PCS,
                         "http://hl7.org/fhir/sid/icd-10-pcs", "urn:oid:2.16.840.1.113883.6.4"})
# A procedure quantity in minutes (UCUM `min`, or the unit spelt out): a timed service
MINUTES = frozenset({"min", "mins", "minute", "minutes"})
MINUTE = {"unit": "min", "system": "http://unitsofmeasure.org", "code": "min"}
MODELS = {"Claim": FhirClaim, "ExplanationOfBenefit": ExplanationOfBenefit}
# An EOB line's billed amount when it has neither net nor unitPrice: the amount of its
# adjudication of these categories, first found first (CARIN Blue Button: `submitted`).
LINE_AMOUNTS = ("submitted", "eligible")
# R4's `status` codes of a claim no longer standing: skipped, with a note, not scored.
NOT_LIVE = {"cancelled": "a cancelled claim", "entered-in-error": "a claim entered in error"}
# R4's `use` codes that are not a claim for care given: skipped, with a note, not scored.
NOT_CLAIM_USES = {"preauthorization": "a prior-authorisation request",
                  "predetermination": "a predetermination (a cost estimate before care)"}
# Elements that show an older FHIR release by shape: in that release's Claim /
# ExplanationOfBenefit and not in R4's, which renamed or dropped them (STU3 `information`
# became `supportingInfo`, `totalCost` `total`, `item.service` `item.productOrService`).
DSTU2_ELEMENTS = ("ruleset", "originalRuleset", "target", "coverage", "request",
                  "requestProvider", "requestOrganization")
STU3_ELEMENTS = ("information", "totalCost", "totalBenefit", "unallocDeductable",
                 "organization", "employmentImpacted", "hospitalization")
OLD_USES = ("complete", "proposed", "exploratory", "other")  # STU3 and DSTU2 `use` codes
# Elements the mapping does not read on every claim (`procedure`: a professional claim's,
# ICD-10-PCS being an institutional claim's field): errors inside them do not cost the
# claim (`_validate`); an institutional claim reads its procedures (`_pcs`)
UNREAD = frozenset({"procedure"})


# -- reading ------------------------------------------------------------------------------

def read(text: str, references: References | None = None) -> list[Claim | ConversionError]:
    """Every Claim / ExplanationOfBenefit in one FHIR JSON document or NDJSON text.

    A claim's patient and provider are looked up where the claim has them (contained, or
    in its Bundle), then in `references` (reference data given beside the input).
    Never raises for bad input: each record that is not a claim becomes a
    ConversionError (its 1-based position, a FHIRPath, the reason). A single document's
    records are numbered by Bundle entry; NDJSON's by line.
    """
    given = (references,) if references is not None else ()
    try:
        return list(_document(json.loads(text), 1, "", given))
    except ValueError as e:
        whole = e
    lines = text.splitlines()
    first = next((x for x in lines if x.strip()), "")
    try:
        json.loads(first)
    except ValueError:  # not NDJSON either: one broken document, one error
        where = f" at line {whole.lineno} column {whole.colno}" if isinstance(
            whole, json.JSONDecodeError) else ""
        return [ConversionError(0, "", f"not JSON{where}: one FHIR resource, a Bundle "
                                "or NDJSON (one resource a line) was expected")]
    out: list[Claim | ConversionError] = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except ValueError as e:
            out.append(ConversionError(lineno, "", f"not JSON: {e.msg}"))
            continue
        out.extend(_document(doc, lineno, "", given, by_line=True))
    return out


def _document(doc: Any, index: int, prefix: str, given: tuple[References, ...],
              by_line: bool = False) -> Iterator[Claim | ConversionError]:
    if not isinstance(doc, dict):
        yield ConversionError(index, "", "not a JSON object")
        return
    kind = doc.get("resourceType")
    if kind != "Bundle":
        yield _record(doc, index, (References(), *given), prefix)
        return
    entries = doc.get("entry")
    try:  # the envelope alone: entries are validated one by one below
        Bundle.model_validate({k: v for k, v in doc.items() if k != "entry"})
    except ValidationError as e:
        yield _validation_error(e, index, "Bundle", None)
        return
    if not isinstance(entries, list):
        entries = []
    resources = [(k, e.get("resource"), e.get("fullUrl")) for k, e in enumerate(entries)
                 if isinstance(e, dict)]
    known = (References.of_bundle((res, url) for _, res, url in resources), *given)
    found = 0
    for k, res, _ in resources:
        kind = res.get("resourceType") if isinstance(res, dict) else None
        if res is None or (isinstance(kind, str) and kind not in MODELS):
            continue  # what claims refer to (Patient…) or sit beside (Coverage…): no record
        found += 1
        yield _record(res, index if by_line else k + 1, known, f"Bundle.entry[{k}].resource")
    if not found:
        yield ConversionError(index, "Bundle.entry", "the Bundle holds no Claim or "
                              "ExplanationOfBenefit")


def _record(res: Any, index: int, known: tuple[References, ...], prefix: str
            ) -> Claim | ConversionError:
    if not isinstance(res, dict):
        return ConversionError(index, prefix, "not a JSON object")
    kind = res.get("resourceType")
    rid = res.get("id") if isinstance(res.get("id"), str) else None
    model = MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        return ConversionError(index, f"{prefix}.resourceType" if prefix else "resourceType",
                               f"{kind!r}: expected Claim, ExplanationOfBenefit or a Bundle "
                               "of them", rid)
    root = prefix or kind
    older = _older_release(res)
    if older:
        return ConversionError(index, root, f"a FHIR {older[0]} {kind} by its shape "
                               f"({', '.join(older[1])}: elements R4 renamed or dropped); "
                               "ClaimScope reads FHIR R4", rid)
    status = res.get("status")
    if status in NOT_LIVE:
        return ConversionError(index, f"{root}.status", f"{status!r}: {NOT_LIVE[status]}, "
                               "not a claim to score", rid, skipped=True)
    use = res.get("use")
    if use in NOT_CLAIM_USES:
        return ConversionError(index, f"{root}.use", f"{use!r}: {NOT_CLAIM_USES[use]}, not "
                               "a claim to score", rid, skipped=True)
    if use != "claim" and isinstance(use, str):
        return ConversionError(index, f"{root}.use", f"{use!r}: FHIR R4 has claim, "
                               "preauthorization or predetermination", rid)
    institutional = _is_institutional(res)
    if institutional:
        res = _revenue_only_items(res)
    try:
        parsed = _validate(model, res, frozenset() if institutional else UNREAD)
    except ValidationError as e:
        return _validation_error(e, index, root, rid)
    try:
        fields, paths = _fields(parsed, kind, known, institutional)
    except Unmappable as e:
        path = e.path if not prefix else prefix + e.path.removeprefix(kind)
        return ConversionError(index, path, e.message, rid, skipped=e.skipped)
    except (ValueError, TypeError, AttributeError, ArithmeticError) as e:
        # a shape FHIR allows that the mapping did not foresee: this record only
        return ConversionError(index, prefix or kind, f"cannot map: {e}", rid)
    if prefix:
        paths = {k: prefix + v.removeprefix(kind) for k, v in paths.items()}
    return finish(index, rid, fields, paths)


def _revenue_only_items(res: dict) -> dict:
    """`res` with `not-applicable` as the productOrService of each item that has a revenue
    code and none: R4 requires the element, but a facility's line is its revenue code
    (CARIN Blue Button's own institutional examples leave it out). An item with neither
    stays invalid."""
    def revenue_only(item: object) -> bool:
        revenue = item.get("revenue") if isinstance(item, dict) else None
        codings = revenue.get("coding") if isinstance(revenue, dict) else None
        return ("productOrService" not in item and isinstance(codings, list)
                and any(isinstance(c, dict) and c.get("code") for c in codings))

    items = res.get("item")
    if not isinstance(items, list) or not any(revenue_only(i) for i in items):
        return res
    return {**res, "item": [{**i, "productOrService": NOT_APPLICABLE} if revenue_only(i)
                            else i for i in items]}


def _validate(model: Any, res: dict, unread: frozenset[str]) -> Any:
    """`res` validated as `model`. A resource whose only errors are in elements the mapping
    does not read (`unread`: UNREAD, or none for an institutional claim, which reads its
    `procedure`) is validated again without them: a professional CARIN example with a
    `procedure` missing its sequence is still a readable claim. Any other error stands."""
    try:
        return model.model_validate(res)
    except ValidationError as e:
        if not all(err["loc"] and err["loc"][0] in unread for err in e.errors()):
            raise
    return model.model_validate({k: v for k, v in res.items() if k not in unread})


def _older_release(res: dict) -> tuple[str, list[str]] | None:
    """("STU3", ["information", "totalCost"]): the FHIR release a Claim / EOB is shaped
    as and the elements that show it; None for an R4 shape. Only what R4 does not have
    counts, so a valid R4 resource is never named older."""
    items = [i for i in res.get("item") or [] if isinstance(i, dict)] \
        if isinstance(res.get("item"), list) else []
    dxs = [d for d in res.get("diagnosis") or [] if isinstance(d, dict)] \
        if isinstance(res.get("diagnosis"), list) else []
    dstu2 = [k for k in DSTU2_ELEMENTS if k in res]
    dstu2 += ["type as a code"] if isinstance(res.get("type"), str) else []
    dstu2 += ["diagnosis.diagnosis"] if any("diagnosis" in d for d in dxs) else []
    dstu2 += ["item.service as a Coding"] if any(
        isinstance(i.get("service"), dict) and "coding" not in i["service"] for i in items) else []
    if dstu2:
        return "DSTU2", dstu2
    stu3 = [k for k in STU3_ELEMENTS if k in res]
    stu3 += ["item.service"] if any("service" in i for i in items) else []
    stu3 += ["insurance as one object"] if isinstance(res.get("insurance"), dict) else []
    if stu3:
        return "STU3", stu3
    use = res.get("use")
    return ("STU3 or DSTU2", [f"use {use!r}"]) if use in OLD_USES else None


def _validation_error(e: ValidationError, index: int, root: str, rid: str | None
                      ) -> ConversionError:
    err = e.errors(include_url=False)[0]
    path = root + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
    more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
    msg = " ".join(str(err["msg"]).split())
    return ConversionError(index, path, f"invalid FHIR R4: {msg}{more}", rid)


def _resolve(ref: Any, res: Any, known: tuple[References, ...], path: str,
             kinds: tuple[str, ...]) -> tuple[Any, str]:
    """The resource a Reference points at, and the id it names it by: contained (`#id`),
    else in `known` in order (the Bundle's, then the reference data), by its `reference`
    (relative, absolute or conditional, see References.find) or, failing that, by its
    `identifier`. A resource found nowhere is None: the claim is still read, its member's
    or provider's details unknown (docs/formats.md, "Unknowns"). A Reference that names
    nothing, or several resources, is Unmappable."""
    target = getattr(ref, "reference", None)
    ident = getattr(ref, "identifier", None)
    logical = (ident.system, ident.value) if ident is not None and ident.value else None
    if not target and not logical:
        raise Unmappable(path, "no reference (ClaimScope needs the resource itself)")
    name = target or f"identifier {'|'.join(x for x in logical if x)}"
    if target and target.startswith("#"):
        for c in res.contained or []:
            if c.id == target[1:] and c.get_resource_type() in kinds:
                return c, target[1:]
        raise Unmappable(path, f"reference {name!r} names no contained resource")
    else:
        for refs in known:
            try:
                found = refs.find(target, kinds) if target else []
            except ValueError as e:
                raise Unmappable(path, str(e)) from None
            if not found and logical:
                found = refs.by_identifier(*logical, kinds)
            if len(found) > 1:
                raise Unmappable(path, f"reference {name!r} matches {len(found)} resources "
                                 "(a reference must name one)")
            if found:
                return _validated(found[0], name, path), ""
    named = TAIL.search(target) if target and "?" not in target else None
    if named and named[1] not in kinds:  # `patient: Practitioner/d1` is a wrong reference
        raise Unmappable(path, f"reference {name!r} names a {named[1]}, where "
                         f"{' or '.join(kinds)} belongs")
    return None, _logical_id(target, logical)


def _logical_id(target: str | None, logical: tuple[str | None, str] | None) -> str:
    """The id a reference names its resource by: `Patient/1` and `https://x/Patient/1` ->
    `1`, `Organization?identifier=system|123` -> `123`, else the identifier's value."""
    if target:
        query = target.partition("?")[2]
        if query:
            values = [v.rpartition("|")[2] for k, v in parse_qsl(query) if k in (
                "identifier", "_id")]
            if values and values[0]:
                return values[0]
        elif m := TAIL.search(target):
            return m[2]
        else:
            return target.rstrip("/").rpartition("/")[2].removeprefix("urn:uuid:")
    return logical[1] if logical else ""


def _validated(raw: dict, name: str, path: str) -> Any:
    try:
        return get_fhir_model_class(raw["resourceType"]).model_validate(raw)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise Unmappable(path, f"{name} is invalid FHIR R4: {loc}: {err['msg']}") from None


def _codes(concept: Any, systems) -> list[tuple[str, str, str | None]]:
    """(system, code, display) of a CodeableConcept's codings in the given systems."""
    return [(c.system, c.code, c.display) for c in (getattr(concept, "coding", None) or [])
            if c.system in systems and c.code]


def _fields(r: Any, kind: str, known: tuple[References, ...], institutional: bool
            ) -> tuple[dict, dict[str, str]]:
    """The contract's fields of a validated Claim / ExplanationOfBenefit, with their paths."""
    if not r.id:
        raise Unmappable(f"{kind}.id", "missing (the claim id)")
    paths = {"": kind, "claim_id": f"{kind}.id", "submitted_at": f"{kind}.created",
             "total_charge": f"{kind}.total", "diagnoses": f"{kind}.diagnosis",
             "provider_specialty": f"{kind}.provider", "provider_id": f"{kind}.provider",
             "member_id": f"{kind}.patient", "member_age": f"{kind}.patient",
             "member_sex": f"{kind}.patient", "service_date": f"{kind}.item",
             "place_of_service": f"{kind}.item", "description": f"{kind}.supportingInfo"}
    patient, member = _resolve(r.patient, r, known, f"{kind}.patient", ("Patient",))
    provider, provider_id = _resolve(r.provider, r, known, f"{kind}.provider", PEOPLE[1:])
    if not r.item:
        raise Unmappable(f"{kind}.item", "no item: a claim without service lines has nothing "
                         "to score")
    dates, places, lines = [], [], []
    total = _claim_total(r, kind)
    for i, item in enumerate(r.item):
        at = f"{kind}.item[{i}]"
        if item.servicedDate or item.servicedPeriod:
            dates.append(item.servicedDate or item.servicedPeriod.start)
        pos = [c for _, c, _ in _codes(item.locationCodeableConcept, {POS})] or [
            c.code for c in (getattr(item.locationCodeableConcept, "coding", None) or [])
            if c.code and len(c.code) == 2 and c.code.isdigit()]
        places += pos[:1]
        # a claim of one item bills on it what the claim bills, where the item says nothing
        if institutional and any(c.code == TOTAL_REVENUE_CODE for c in getattr(
                item.revenue, "coding", None) or []):
            continue  # UB-04's total-charges line: the claim's total, not a service
        whole = total if len(r.item) == 1 else None
        lines.append((*(_revenue_line(item, at, whole, total is not None) if institutional
                        else _line(item, at, whole)), at))
    billed: dict[str, list[dict]] = {"procedures": [], "medications": [], "revenue_lines": []}
    for line, kind_of, at in _net_reversals(lines):
        billed[kind_of].append(line)
        paths[f"{kind_of}.{len(billed[kind_of]) - 1}"] = at
    _one_unknown_charge(billed["revenue_lines"], total)
    bill_type = _bill_type(r, kind) if institutional else None
    if not dates and r.billablePeriod and r.billablePeriod.start:
        dates.append(r.billablePeriod.start)
    if not dates:
        raise Unmappable(f"{kind}.item.servicedDate", "no service date on any item (nor a "
                         "billablePeriod.start)")
    if not all(isinstance(d, dt.date) for d in dates):
        raise Unmappable(f"{kind}.item.servicedDate", "a partial date (a full date needed)")
    day = min(d.date() if isinstance(d, dt.datetime) else d for d in dates)
    if not places:
        if _is_pharmacy(r):
            places = ["01"]
        elif bill_type and (pos := place_of_bill(bill_type, [
                x["revenue_code"] for x in billed["revenue_lines"]])):
            places = [pos]
        else:
            raise Unmappable(f"{kind}.item.locationCodeableConcept",
                             "no CMS place-of-service code on any item")
    birth = getattr(patient, "birthDate", None)  # a partial birthDate reads as unknown
    created = r.created
    if not isinstance(created, dt.date):
        raise Unmappable(f"{kind}.created", "a partial date (a full date needed)")
    if not isinstance(created, dt.datetime):
        created = dt.datetime.combine(created, dt.time())
    fields = {
        "claim_id": r.id,
        "member_id": _identifier(patient, MEMBER, "MB") if patient else member,
        "provider_id": _identifier(provider, PROVIDER, None) if provider else provider_id,
        "provider_specialty": _specialty(provider, r, known),
        "member_age": age_on(birth, day) if isinstance(birth, dt.date) else None,
        "member_sex": {"female": "F", "male": "M"}.get(getattr(patient, "gender", None) or "",
                                                       "U"),
        "service_date": day,
        # a created without a time zone is read as UTC (docs/formats.md)
        "submitted_at": created if created.tzinfo else created.replace(tzinfo=dt.UTC),
        "place_of_service": places[0],
        "diagnoses": _diagnoses(r, kind),
        **billed,
        "total_charge": _total(r, kind, [x for xs in billed.values() for x in xs]),
    }
    if institutional:
        fields |= {"claim_type": "institutional", "bill_type": bill_type,
                   "icd10_pcs": _pcs(r)}
        paths |= {"bill_type": f"{kind}.supportingInfo", "icd10_pcs": f"{kind}.procedure"}
    notes = [s.valueString for s in r.supportingInfo or []
             if s.valueString and _codes(s.category, {INFO})]
    if notes:
        fields["description"] = "\n".join(notes)
    return fields, paths


def _net_reversals(lines: list[tuple[dict, str, str]]) -> list[tuple[dict, str, str]]:
    """The lines a claim stands for once its reversals are netted out, as the payer means
    them. An adjusted EOB lists a line, its reversal (the same service with a negative
    amount or quantity, whole or in part) and often the line again. Where a claim has a
    reversal, the lines of one service (code and modifiers, or drug, strength and days)
    are summed, signed, into one line; a service that nets to nothing is dropped. A claim
    with no reversal is read line by line, as sent.

    A reversal of more than its service billed is Unmappable; a claim whose every service
    nets to nothing is a void, skipped with a note. A line of unknown code or charge is
    kept as sent (there is nothing to net it against), and a reversal of one is
    Unmappable."""
    count = {"procedures": "units", "medications": "quantity",  # what a line counts
             "revenue_lines": "units"}

    def reversed_(line: dict, kind_of: str) -> bool:
        return (line["charge"] or 0) < 0 or line[count[kind_of]] < 0

    def unknown(line: dict) -> bool:  # of unknown service or charge: nothing to net against
        return line["charge"] is None or line.get("code", "") is None or (
            "code" not in line and line.get("revenue_code", "") is None)

    if not any(reversed_(line, kind_of) for line, kind_of, _ in lines):
        return lines
    if at := next((at for line, kind_of, at in lines
                   if unknown(line) and reversed_(line, kind_of)), None):
        raise Unmappable(at, "a reversal of a line of unknown code: what it reverses cannot "
                         "be told")
    sums: dict[tuple, list] = {}  # service -> [its first line, kind, path, count, charge]
    for line, kind_of, at in (x for x in lines if not unknown(x[0])):
        sign = -1 if reversed_(line, kind_of) else 1
        service = (kind_of, *((k, tuple(v) if isinstance(v, list) else v)
                              for k, v in sorted(line.items())
                              if k not in (count[kind_of], "charge")))
        s = sums.setdefault(service, [line, kind_of, at, 0, Decimal(0)])
        s[3] += sign * abs(line[count[kind_of]])
        s[4] += sign * abs(line["charge"])
        if sign < 0 and (s[3] < 0 or s[4] < 0):
            raise Unmappable(at, f"a reversal of more than the claim billed for it "
                             f"({line['charge']})")
    out = [({**first, count[k]: n, "charge": charge}, k, at)
           for first, k, at, n, charge in sums.values() if n or charge]
    out += [x for x in lines if unknown(x[0])]  # as sent
    if not out:
        raise Unmappable(lines[0][2].rpartition(".")[0] + ".item", "every line is reversed: "
                         "a voided claim, not a claim to score", skipped=True)
    return out


def _one_unknown_charge(lines: list[dict], total: Decimal | None) -> None:
    """Where one line alone states no amount, it is the claim's total less the others'
    (the contract's unknown is what cannot be told): filled in, in place."""
    unknown = [x for x in lines if x["charge"] is None]
    if len(unknown) == 1 and total is not None:
        rest = total - sum((x["charge"] for x in lines if x["charge"] is not None), Decimal(0))
        if rest >= 0:
            unknown[0]["charge"] = rest


def _is_pharmacy(r: Any) -> bool:
    return any(c == "pharmacy" for _, c, _ in _codes(r.type, {CLAIM_TYPE, CARIN_CLAIM_TYPE}))


def _is_institutional(res: dict) -> bool:
    """Whether a Claim / EOB, as sent (before validation: it decides what is validated),
    is a facility's: its `type` coded as one (INSTITUTIONAL)."""
    concept = res.get("type")
    codings = concept.get("coding") if isinstance(concept, dict) else None
    if not isinstance(codings, list):
        return False
    return any(isinstance(c, dict) and (c.get("system"), c.get("code")) in INSTITUTIONAL
               for c in codings)


def _bill_type(r: Any, kind: str) -> str | None:
    """The type of bill, without its leading zero ("0111" -> "111"): where CARIN Blue
    Button gives it (supportingInfo `typeofbill`), else a subType coded as one (the FHIR
    specification's examples). None when the claim does not say."""
    found = [(f"{kind}.supportingInfo[{i}].code", c.code) for i, s in
             enumerate(r.supportingInfo or []) if any(
                 c.code == BILL_TYPE_INFO for c in getattr(s.category, "coding", None) or [])
             for c in (getattr(s.code, "coding", None) or [])[:1]]
    found += [(f"{kind}.subType", c.code) for c in getattr(r.subType, "coding", None) or []
              if c.system in BILL_TYPE_SYSTEMS]
    for at, code in found:
        code = (code or "").strip()
        code = code[1:] if len(code) == 4 and code.startswith("0") else code
        if not re.fullmatch(BILL_TYPE_PATTERN, code):
            raise Unmappable(at, f"{code!r} is no NUBC type of bill (facility type, care "
                             "type, frequency)")
        return code
    return None


def _pcs(r: Any) -> list[str] | None:
    """The ICD-10-PCS codes of an institutional claim's `procedure`, in order, once each;
    None (unknown) where a code under an ICD-10-PCS system is not one (CARIN's examples
    put the revenue code 0301 there) or is written as unknown. The model reads no
    ICD-10-PCS code, so this is the investigator's to see, not a reason to drop the claim.
    Procedures coded otherwise (CPT, SNOMED) are the lines' business, not read here."""
    out: dict[str, None] = {}
    for p in r.procedure or []:
        if any(c == "unknown" for _, c, _ in _codes(p.procedureCodeableConcept, {DATA_ABSENT})):
            return None
        for _, code, _ in _codes(p.procedureCodeableConcept, PCS_SYSTEMS):
            if not re.fullmatch(ICD10PCS_PATTERN, code.strip().upper()):
                return None
            out.setdefault(code.strip().upper())
    return list(out)


def _identifier(res: Any, ours: str, type_code: str | None) -> str:
    """Our own identifier system first, then an NPI or a typed one, then any, then the id."""
    ids = [i for i in (getattr(res, "identifier", None) or []) if i.value]
    for test in (lambda i: i.system == ours, lambda i: i.system == NPI,
                 lambda i: type_code is not None and any(
                     c.code == type_code for c in (getattr(i.type, "coding", None) or []))):
        hit = next((i.value for i in ids if test(i)), None)
        if hit:
            return hit
    return ids[0].value if ids else (res.id or "")


def _specialty(provider: Any, r: Any, known: tuple[References, ...]) -> str | None:
    """The specialty of the first NUCC taxonomy code that maps to one: the reference data's
    for the provider's NPI, then for the care team's NPIs (the issue: the NPI is looked up
    there first); then the provider's own (Practitioner.qualification,
    PractitionerRole.specialty), then the care team's (CARIN Blue Button puts it there).
    None (unknown) where none does. Lazily: no lookup after the first code that maps."""
    team = [t.provider for t in (r.careTeam or []) if t.provider is not None]
    npis = [i.value for i in (getattr(provider, "identifier", None) or [])
            if i.system == NPI and i.value]
    npis += [t.identifier.value for t in team if t.identifier is not None and
             t.identifier.system == NPI and t.identifier.value]
    kinds = [q.code for q in (getattr(provider, "qualification", None) or [])]
    kinds += list(getattr(provider, "specialty", None) or [])
    kinds += [t.qualification for t in (r.careTeam or []) if t.qualification]
    codes = itertools.chain((refs.taxonomy(npi) for npi in npis for refs in known),
                            (code for concept in kinds for _, code, _ in _codes(concept, {NUCC})))
    return next((s for s in map(specialty_of, codes) if s is not None), None)


def _diagnoses(r: Any, kind: str) -> list[str] | None:
    """The ICD-10-CM codes of `diagnosis`, in order; a code listed twice (as principal and
    as secondary, say) counts once. None (unknown) where the claim states none (R4 makes
    `diagnosis` optional, and a pharmacy fill usually has none; an 837 without HI breaks
    its guide and stays an error) or codes every one in a clinical terminology only
    (CLINICAL_SYSTEMS: SNOMED CT). A SNOMED CT diagnosis beside ICD-10-CM ones is an
    error: the contract has no way to say that one of several is unknown, and leaving it
    out would make the list look complete."""
    if not r.diagnosis:
        return None
    clinical = [i for i, d in enumerate(r.diagnosis)
                if not _codes(d.diagnosisCodeableConcept, ICD10_SYSTEMS)
                and _codes(d.diagnosisCodeableConcept, CLINICAL_SYSTEMS)]
    if len(clinical) == len(r.diagnosis):
        return None
    if clinical:
        raise Unmappable(f"{kind}.diagnosis[{clinical[0]}].diagnosisCodeableConcept",
                         "coded in SNOMED CT only, beside ICD-10-CM diagnoses: the contract "
                         "cannot say that one of a claim's diagnoses is unknown")
    out: dict[str, None] = {}
    for i, d in enumerate(r.diagnosis):
        at = f"{kind}.diagnosis[{i}].diagnosisCodeableConcept"
        concept = d.diagnosisCodeableConcept
        if concept is None and d.diagnosisReference is not None:
            raise Unmappable(f"{kind}.diagnosis[{i}].diagnosisReference", "a reference to a "
                             "Condition (Synthea writes these): ClaimScope reads the code in "
                             "diagnosisCodeableConcept")
        codes = _codes(concept, ICD10_SYSTEMS)
        if not codes:
            icd9 = _codes(concept, ICD9_SYSTEMS)
            others = sorted({c.system or "no system" for c in
                             (getattr(concept, "coding", None) or [])})
            raise Unmappable(at, f"ICD-9 code {icd9[0][1]!r} ({icd9[0][0]}): the contract "
                             "takes ICD-10-CM" if icd9 else "no ICD-10-CM coding" + (
                                 f" (codings in {', '.join(others)})" if others else ""))
        system, code, _ = codes[0]
        if code.strip()[:1].isdigit():
            raise Unmappable(at, f"{code!r} under {system} is shaped like an ICD-9 code, "
                             "not ICD-10-CM (which begins with a letter)")
        out.setdefault(dotted_icd10(code))
    return list(out)


def _line(item: Any, at: str, whole: Decimal | None = None) -> tuple[dict, str]:
    """One item as a procedure line or a fill, by the code system of its productOrService.
    `whole`: the claim's total, the amount of its only item when that item states none."""
    concept = item.productOrService
    procs = _codes(concept, PROCEDURE_SYSTEMS)
    drugs = _codes(concept, DRUG_SYSTEMS)
    unknown = not procs and not drugs and _unknown_service(concept)
    if not procs and not drugs and not unknown:  # what the line is comes before its cost
        raise _no_service(concept, at, "no CPT/HCPCS, RxNorm or NDC coding")
    qty = _quantity(item)
    charge = _amount(item, at, whole)
    if procs and not re.fullmatch(PROCEDURE_PATTERN, procs[0][1].strip().upper()):
        code = procs[0][1]
        revenue = item.revenue is not None and any(
            c.code == code for c in (item.revenue.coding or []))
        raise Unmappable(f"{at}.productOrService", f"{code!r} under {procs[0][0]} is no "
                         "CPT/HCPCS code" + (": it is the line's revenue code, and the claim's "
                                             "type is not institutional" if revenue else ""))
    if procs or unknown:  # a service of unknown code is billed as a known one is
        units = _units(item, at)
        timed = item.quantity is not None and (item.quantity.code or item.quantity.unit or ""
                                               ).lower() in MINUTES
        return {"code": procs[0][1].strip().upper() if procs else None,
                "units": 1 if timed else units,
                "charge": charge, "modifiers": _modifiers(item),
                **({"minutes": units} if timed else {})}, "procedures"
    if drugs:
        system, code, display = drugs[0]
        text = display or getattr(concept, "text", None) or ""
        if system == DRUG:  # ours: the code is the name, the display "name 500 MG"
            name = code
            strength = strength_in(text, len(code) if text.startswith(code) else 0)
        else:
            name, strength = drug_from_text(text) or (f"{DRUG_SYSTEMS[system]}:{code}",
                                                      strength_in(text))
        days = next((e.valueInteger for e in item.extension or []
                     if e.url == DAYS_SUPPLY and e.valueInteger is not None), None)
        return {"name": name, "strength_mg": strength or UNKNOWN_STRENGTH_MG,
                "quantity": float(qty) if qty is not None else 1.0,
                "days_supply": days if days is not None else usual_days_supply(name),
                "charge": charge}, "medications"


def _unknown_service(concept: Any) -> bool:
    """Whether a productOrService names a service in a clinical terminology
    (CLINICAL_SYSTEMS), or says its code is unknown: a service of unknown code."""
    return bool(_codes(concept, CLINICAL_SYSTEMS) or any(
        c[1] == "unknown" for c in _codes(concept, {DATA_ABSENT})))


def _no_service(concept: Any, at: str, what: str) -> Unmappable:
    """The error of a line whose productOrService names no service code we read: `what`,
    and the code systems it does use."""
    codes = [c.code for c in (getattr(concept, "coding", None) or []) if c.code]
    systems = sorted({c.system or "no system" for c in (getattr(concept, "coding", None) or [])})
    if any(re.fullmatch(PROCEDURE_PATTERN, c) for c in codes):
        return Unmappable(f"{at}.productOrService", "no CPT/HCPCS coding (a CPT-like code "
                          "without the CPT or HCPCS system)")
    return Unmappable(f"{at}.productOrService", what + (
        f" (codings in {', '.join(systems)})" if systems else ""))


def _revenue_line(item: Any, at: str, whole: Decimal | None = None, stated: bool = False
                  ) -> tuple[dict, str]:
    """One item of an institutional claim as a revenue line: its NUBC revenue code, and
    the CPT/HCPCS code of its service where productOrService has one. CARIN Blue Button's
    examples repeat the revenue code in productOrService under the CPT system, and
    productOrService may say `not-applicable`: neither is a service code, and the line is
    read by its revenue code alone. A service in SNOMED CT or CVX alone is a line of unknown
    service; with the claim's total `stated`, a line that states no amount of its own is
    of unknown charge (an inpatient EOB may state only the total)."""
    given = [c.code.strip() for c in getattr(item.revenue, "coding", None) or [] if c.code]
    if given and not re.fullmatch(REVENUE_PATTERN, given[0]):
        raise Unmappable(f"{at}.revenue", f"{given[0]!r} is no NUBC revenue code (4 digits)")
    revenue = given[0] if given else None
    procs = [c for _, c, _ in _codes(item.productOrService, PROCEDURE_SYSTEMS)
             if c.strip() != revenue]
    if procs and not re.fullmatch(PROCEDURE_PATTERN, procs[0].strip().upper()):
        raise Unmappable(f"{at}.productOrService", f"{procs[0]!r} is no CPT/HCPCS code")
    if revenue is None and not procs and not _unknown_service(item.productOrService):
        raise _no_service(item.productOrService, at, "no revenue code, nor a CPT/HCPCS coding")
    return {"revenue_code": revenue,
            **({"code": procs[0].strip().upper()} if procs else {}),
            "units": _units(item, at), "charge": _amount(item, at, whole, stated),
            "modifiers": _modifiers(item)}, "revenue_lines"


def _quantity(item: Any) -> Decimal | None:
    return item.quantity.value if item.quantity and item.quantity.value is not None else None


def _units(item: Any, at: str) -> int:
    """A line's quantity as whole units (1 when it states none, or states 0: Synthea
    writes 0 on every facility line, where no service is billed in no units)."""
    qty = _quantity(item)
    units = qty if qty else Decimal(1)
    if units != int(units):
        raise Unmappable(f"{at}.quantity", f"{units} units: a service bills whole units")
    return int(units)


def _modifiers(item: Any) -> list[str]:
    return [c.code for m in item.modifier or [] for c in (m.coding or [])[:1] if c.code]


def _amount(item: Any, at: str, whole: Decimal | None, unknown: bool = False
            ) -> Decimal | None:
    """A line's total: `net`, else unitPrice x quantity (x factor), else its submitted or
    eligible adjudication, else `whole` (the claim's, for its only line), else None where
    an `unknown` charge may stand (a facility line of a claim whose total is stated)."""
    qty = _quantity(item)
    charge = money(item.net.value) if item.net and item.net.value is not None else None
    if charge is None and item.unitPrice and item.unitPrice.value is not None:
        charge = money(item.unitPrice.value) * (qty if qty is not None else Decimal(1))
        charge *= item.factor if item.factor is not None else 1
    if charge is None:
        charge = _adjudicated(item)
    if charge is None:
        charge = whole
    if charge is None and unknown:
        return None
    if charge is None:
        raise Unmappable(f"{at}.net", "no net (line total), unitPrice, nor a submitted or "
                         "eligible adjudication amount (the contract needs each line's "
                         "charge, where an inpatient EOB may state only the claim's)")
    return charge.quantize(Decimal("0.01"))


def _adjudicated(item: Any) -> Decimal | None:
    """An EOB line's amount from its adjudications, by LINE_AMOUNTS (matched on the
    category code, as `total` is); None where there is none, and on a Claim's item."""
    found: dict[str, Any] = {}
    for a in getattr(item, "adjudication", None) or []:
        for c in getattr(a.category, "coding", None) or []:
            if c.code in LINE_AMOUNTS and a.amount is not None and a.amount.value is not None:
                found.setdefault(c.code, a.amount.value)
    return next((money(found[c]) for c in LINE_AMOUNTS if c in found), None)


def _total(r: Any, kind: str, lines: list[dict]) -> Decimal:
    stated = _claim_total(r, kind)
    if stated is not None:
        return stated
    return sum((x["charge"] for x in lines), Decimal(0))  # every charge known: no total


def _claim_total(r: Any, kind: str) -> Decimal | None:
    """The claim's stated total: Claim.total, an EOB's `total` of category submitted."""
    if kind == "Claim":
        return money(r.total.value) if r.total is not None and r.total.value is not None \
            else None
    for t in r.total or []:
        if any(c.code == "submitted" for c in (t.category.coding or [])) and \
                t.amount is not None and t.amount.value is not None:
            return money(t.amount.value)
    return None


# -- writing ------------------------------------------------------------------------------

def write(claim: Claim) -> dict:
    """One contract claim as a FHIR R4 Claim resource (a JSON-ready dict), its Patient and
    Practitioner contained. `read` gives back the same claim; docs/formats.md says where
    each field goes."""
    birth = birth_date_for(claim.member_age, claim.service_date, claim.member_id
                           ) if claim.member_age is not None else None
    pos = {"coding": [{"system": POS, "code": claim.place_of_service}]}
    n_dx = min(4, len(claim.diagnosis_codes))
    common = {"servicedDate": claim.service_date.isoformat(), "locationCodeableConcept": pos,
              **({"diagnosisSequence": list(range(1, n_dx + 1))} if n_dx else {})}
    items: list[dict] = []
    for p in claim.procedures:  # what the contract does not know is written as unknown
        system = CPT if (p.code or "0")[0].isdigit() else HCPCS
        items.append({
            "sequence": len(items) + 1, **common,
            "productOrService": {"coding": [{"system": system, "code": p.code}]} if p.code
            else UNKNOWN_CODE,
            **({"modifier": [{"coding": [{"system": system, "code": m}]}
                             for m in p.modifiers]} if p.modifiers else {}),
            "quantity": {"value": p.minutes, **MINUTE} if p.minutes else {"value": p.units},
            "net": {"value": float(p.charge), "currency": "USD"}})
    for r in claim.revenue_lines:
        system = CPT if (r.code or "0")[0].isdigit() else HCPCS
        items.append({
            "sequence": len(items) + 1, **common,
            **({"revenue": {"coding": [{"system": REVENUE, "code": r.revenue_code}]}}
               if r.revenue_code else {}),
            "productOrService": {"coding": [{"system": system, "code": r.code}]} if r.code
            else NOT_APPLICABLE if r.revenue_code else UNKNOWN_CODE,
            **({"modifier": [{"coding": [{"system": system, "code": m}]}
                             for m in r.modifiers]} if r.modifiers else {}),
            "quantity": {"value": r.units},
            **({"net": {"value": float(r.charge), "currency": "USD"}}
               if r.charge is not None else {})})
    for m in claim.medications:
        items.append({
            "sequence": len(items) + 1, **common,
            "extension": [{"url": DAYS_SUPPLY, "valueInteger": m.days_supply}],
            "productOrService": {"coding": [{"system": DRUG, "code": m.name,
                                             "display": drug_text(m.name, m.strength_mg)}]},
            "quantity": {"value": m.quantity},
            "net": {"value": float(m.charge), "currency": "USD"}})
    out = {
        "resourceType": "Claim", "id": claim.claim_id, "status": "active",
        "type": {"coding": [{"system": CLAIM_TYPE, "code": claim.claim_type if
                             claim.claim_type == "institutional" else "pharmacy" if
                             claim.provider_specialty == "pharmacy" else "professional"}]},
        "use": "claim",
        "contained": [
            {"resourceType": "Patient", "id": "patient",
             "identifier": [{"type": {"coding": [{
                 "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MB"}]},
                 "system": MEMBER, "value": claim.member_id}],
             "gender": {"F": "female", "M": "male"}.get(claim.member_sex, "unknown"),
             **({"birthDate": birth.isoformat()} if birth else {})},
            {"resourceType": "Practitioner", "id": "provider",
             "identifier": [{"system": PROVIDER, "value": claim.provider_id}],
             **({"qualification": [{"code": {"coding": [{
                 "system": NUCC, "code": taxonomy_of(claim.provider_specialty)}]}}]}
                if claim.provider_specialty else {})}],
        "patient": {"reference": "#patient"},
        "created": claim.submitted_at.isoformat(),
        "provider": {"reference": "#provider"},
        "priority": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/processpriority",
                                 "code": "normal"}]},
        "insurance": [{"sequence": 1, "focal": True, "coverage": {"display": "unknown"}}],
        "diagnosis": [{"sequence": k + 1, "diagnosisCodeableConcept": {
            "coding": [{"system": ICD10CM, "code": code}]}} for k, code in
            enumerate(claim.diagnosis_codes)],
        "item": items,
        "total": {"value": float(claim.total_charge), "currency": "USD"},
    }
    info = []
    if claim.description is not None:
        info.append({"category": {"coding": [{"system": INFO, "code": "info"}]},
                     "valueString": claim.description})
    if claim.bill_type is not None:
        info.append({"category": {"coding": [{"system": SUPPORTING_INFO, "code": BILL_TYPE_INFO}]},
                     "code": {"coding": [{"system": BILL_TYPE, "code": f"0{claim.bill_type}"}]}})
    if info:
        out["supportingInfo"] = [{"sequence": k + 1, **x} for k, x in enumerate(info)]
    if claim.icd10_pcs:
        out["procedure"] = [{"sequence": k + 1, "procedureCodeableConcept": {
            "coding": [{"system": PCS, "code": code}]}} for k, code in enumerate(claim.icd10_pcs)]
    elif claim.icd10_pcs is None:
        out["procedure"] = [{"sequence": 1, "procedureCodeableConcept": UNKNOWN_CODE}]
    if not out["diagnosis"]:
        del out["diagnosis"]
    return out
