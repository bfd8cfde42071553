"""X12 5010 837P (professional claims) and 837I (institutional) <-> the claim contract,
with `x12sdk`.

x12sdk splits the interchange into segments and validates each transaction set (ST..SE)
into typed pydantic models of the 005010X222A2 guide (SE01 segment counts included). What
it does not check, the envelope, is checked here: IEA01 and GE01 counts and the control
numbers that must match (ISA13 = IEA02, GS06 = GE02). A transaction set that fails the
library's validation is parsed again one claim at a time (its header and the HL loops
above each CLM, then that CLM's own segments), so one broken claim costs only itself.

An 837I (005010X223A3) claim is an institutional claim of the contract: its type of bill
(CLM05), revenue-code lines (SV2), ICD-10-PCS procedures (HI BBR/BBQ); its place of service
is the one its type of bill stands for (`model.facility.place_of_bill`), since an 837I has none.
837D (005010X224A2, dental: tooth numbers and ADA procedure codes, which the model never
saw) is rejected with a message naming it.

A file may hold several interchanges (ISA..IEA) one after another, as clearinghouse
batches do; each is read on its own, so a broken envelope costs only its interchange.
"""

from __future__ import annotations

import datetime as dt
import re
import zlib
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from pydantic import ValidationError
from x12sdk.io import X12SegmentReader, write_transactions
from x12sdk.models import X12Delimiters
from x12sdk.parsing import create_parser
from x12sdk.support import count_segments
from x12sdk.v5010.x12_837_005010X222A2.transaction_set import HealthCareClaimProfessional
from x12sdk.v5010.x12_837_005010X223A3.loops import Loop2300 as Loop2300I
from x12sdk.v5010.x12_837_005010X223A3.transaction_set import HealthCareClaimInstitutional

from model.claims import Claim
from model.facility import place_of_bill
from model.formats.common import (
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
from model.formats.references import References

PROFESSIONAL = "005010X222A2"
INSTITUTIONAL = "005010X223A3"
# the guide each version is read as: x12sdk reads 837P's as A2, 837I's as A3
READS = {"005010X222": PROFESSIONAL, "005010X222A1": PROFESSIONAL, "005010X222A2": PROFESSIONAL,
         "005010X223": INSTITUTIONAL, "005010X223A1": INSTITUTIONAL,
         "005010X223A2": INSTITUTIONAL, "005010X223A3": INSTITUTIONAL}
# Drug lines: HCPCS "unclassified drugs" with the drug in SV101-7, the description the
# 837P guide asks for with a not-otherwise-classified code.
DRUG_CODE = "J3490"
DAYS = re.compile(r"(\d+)\s*DAYS?\b", re.IGNORECASE)
# HI01-1 qualifiers of ICD-10-CM diagnoses: principal, other, and on an 837I also the
# admitting diagnosis, the patient's reasons for the visit and external causes
ICD10 = {"ABK", "ABF", "ABJ", "APR", "ABN"}
ICD9 = {"BK", "BF", "BJ", "PR", "BN"}
PCS = {"BBR", "BBQ"}  # 837I: principal / other ICD-10-PCS procedure
UNMAPPED = (("005010X224", "837D, dental"),)
X12_TEXT = re.compile(r"^[^*~:^\x00-\x1f\x7f]*$")  # the writer's delimiters, controls


class EnvelopeError(Exception):
    """The interchange as a whole is unusable; one ConversionError for all of it."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path, self.message = path, message


# -- reading ------------------------------------------------------------------------------

def read(text: str, references: References | None = None) -> list[Claim | ConversionError]:
    """Every claim (CLM) of the X12 interchanges in `text`, in order; never raises for bad
    input.

    A broken envelope (no ISA, truncated, counts or control numbers that disagree)
    rejects its interchange with one ConversionError of index 0 (its path begins `ISA[k].`
    when the file holds several). Otherwise each CLM is one record, numbered from 1 across
    the file; a transaction set that is not an 837P gives one error in the place of its
    claims.

    `references`: member and provider reference data. A claim's rendering, else billing,
    NPI is looked up there first for the provider's taxonomy (before PRV), and its member
    id for the age and sex when the claim has no DMG.
    """
    chunks = _interchanges(text.lstrip("\ufeff \r\n\t"))
    out: list[Claim | ConversionError] = []
    for k, chunk in enumerate(chunks, 1):
        try:
            delimiters, transactions = _envelope(chunk)
        except EnvelopeError as e:
            message = e.message if k == 1 or chunk.startswith("ISA") else \
                f"text after interchange {k - 1}'s IEA that does not begin another (ISA)"
            out.append(ConversionError(0, f"ISA[{k}].{e.path}" if len(chunks) > 1 else e.path,
                                       message))
            continue
        for version, segments in transactions:
            out.extend(_transaction(version, segments, delimiters, len(out), references))
    return out


def _interchanges(text: str) -> list[str]:
    """`text` cut after each IEA segment into its interchanges; what cannot be cut (no
    usable ISA, no IEA) stays one piece, for `_envelope` to say what is wrong with it."""
    out: list[str] = []
    while text:
        if not text.startswith("ISA") or len(text) < 106:
            break
        sep, comp, term = text[3], text[104], text[105]
        if len({sep, comp, term}) < 3 or any(c.isalnum() or c == " " for c in (sep, comp, term)):
            break
        # the IEA, or the next ISA if this interchange is cut short: each after a segment
        # terminator (and the line break some files add)
        t, e = re.escape(term), re.escape(sep)
        end = re.compile(rf"{t}\s*IEA{e}[^{t}]*(?:{t}|\Z)|(?<={t})\s*(?=ISA{e})").search(
            text, 106)
        if end is None:
            break
        out.append(text[:end.end()])
        text = text[end.end():].lstrip("\ufeff \r\n\t")
    return [*out, text] if text or not out else out


def _envelope(text: str) -> tuple[X12Delimiters, list[tuple[str, list]]]:
    """Delimiters and the transaction sets (GS08 version, ST..SE segments) of an interchange."""
    if not text.startswith("ISA"):
        raise EnvelopeError("ISA", "not an X12 interchange: it must begin with an ISA segment")
    if len(text) < 106:
        raise EnvelopeError("ISA", f"the ISA segment is truncated ({len(text)} of 106 "
                            "characters)")
    sep, comp, term = text[3], text[104], text[105]
    if len({sep, comp, term}) < 3 or any(c.isalnum() or c == " " for c in (sep, comp, term)):
        raise EnvelopeError("ISA", f"unusable delimiters: element {sep!r}, component {comp!r}, "
                            f"segment {term!r}")
    if text[:106].count(sep) != 16:
        raise EnvelopeError("ISA", f"the ISA segment does not have 16 elements separated by "
                            f"{sep!r} in its fixed 106 characters")
    if term not in "\r\n":  # line breaks between segments are layout, not data
        text = text.replace("\r", "").replace("\n", "")
    reader = X12SegmentReader(text)
    with reader:
        segments = list(reader.segments())
        delimiters = reader.delimiters
    isa, *rest = segments
    groups = 0
    transactions: list[tuple[str, list]] = []
    gs: list | None = None
    st: list | None = None
    in_group = 0
    iea: list | None = None
    for name, fields in rest:
        name = name.strip()
        if not name:
            continue
        if iea is not None:
            raise EnvelopeError(name, "segments after IEA")
        if name == "GS":
            if gs is not None:
                raise EnvelopeError("GS", "a GS inside a functional group (no GE before it)")
            gs, in_group, groups = fields, 0, groups + 1
        elif name == "GE":
            if gs is None or st is not None:
                raise EnvelopeError("GE", "a GE outside a functional group or inside a "
                                    "transaction set")
            _count("GE01", fields, 1, in_group)
            if _field(fields, 2) != _field(gs, 6):
                raise EnvelopeError("GE02", f"group control number {_field(fields, 2)!r} "
                                    f"!= GS06 {_field(gs, 6)!r}")
            gs = None
        elif name == "IEA":
            if gs is not None:
                raise EnvelopeError("IEA", "the last functional group has no GE")
            _count("IEA01", fields, 1, groups)
            if _field(fields, 2) != _field(isa[1], 13):
                raise EnvelopeError("IEA02", f"interchange control number "
                                    f"{_field(fields, 2)!r} != ISA13 {_field(isa[1], 13)!r}")
            iea = fields
        elif gs is None:
            raise EnvelopeError(name, f"a {name} segment outside a functional group (GS..GE)")
        elif name == "ST":
            if st is not None:
                raise EnvelopeError("ST", "an ST inside a transaction set (no SE before it)")
            st = [(name, fields)]
        elif st is None:
            raise EnvelopeError(name, f"a {name} segment outside a transaction set (ST..SE)")
        else:
            st.append((name, fields))
            if name == "SE":
                transactions.append((_field(gs, 8) or _field(st[0][1], 3), st))
                st, in_group = None, in_group + 1
    if iea is None:
        raise EnvelopeError("IEA", "no IEA segment: the interchange is truncated")
    return delimiters, transactions


def _field(fields: list, k: int) -> str:
    return fields[k].strip() if len(fields) > k else ""


def _count(path: str, fields: list, k: int, actual: int) -> None:
    stated = _field(fields, k)
    if not stated.isdigit() or int(stated) != actual:
        raise EnvelopeError(path, f"says {stated!r}, the interchange has {actual}")


def _transaction(version: str, segments: list, delimiters: X12Delimiters, before: int,
                 refs: References | None) -> list[Claim | ConversionError]:
    """The claims of one ST..SE, each a Claim or a ConversionError."""
    claim_ids = [_field(f, 1) for n, f in segments if n == "CLM"]
    st_ref = f"ST {_field(segments[0][1], 2)}"
    if _field(segments[0][1], 1) != "837" or version not in READS:
        what = next((f"{name}, not mapped (docs/formats.md)" for prefix, name in UNMAPPED
                     if version.startswith(prefix)), f"{_field(segments[0][1], 1)} {version}")
        return _each_claim(claim_ids, before, f"{st_ref}.ST01", "ClaimScope reads 837P "
                           f"(005010X222A1/A2) and 837I (005010X223A1-A3); this transaction "
                           f"set is {what}")
    guide = READS[version]
    stated = _field(segments[-1][1], 1)
    if stated != str(len(segments)):  # checked before the claim-by-claim retry recounts
        return _each_claim(claim_ids, before, f"{st_ref}.SE01", f"says {stated!r}, the "
                           f"transaction set has {len(segments)} segments")
    try:
        model = _parse(segments, delimiters, guide)
    except Exception:  # any failure of the whole set (hostile input): retry claim by claim
        return _claim_by_claim(segments, delimiters, before, st_ref, refs, guide)
    results = list(_claims(model, delimiters, before, st_ref, refs))
    if len(results) != len(claim_ids):  # the library kept fewer CLMs than were sent
        return _claim_by_claim(segments, delimiters, before, st_ref, refs, guide)
    return results


def _each_claim(claim_ids: list[str], before: int, path: str, message: str
                ) -> list[Claim | ConversionError]:
    """One error for each CLM of a transaction set rejected whole (one if it has none)."""
    return [ConversionError(before + k + 1, path, message, cid or None)
            for k, cid in enumerate(claim_ids or [""])]


def _parse(segments: list, delimiters: X12Delimiters, guide: str) -> Any:
    parser = create_parser("837", guide, delimiters)
    model = None
    for name, fields in segments:
        model = parser.parse(name, fields) or model
    if model is None:
        raise ValueError("no SE")
    return model


def _claim_by_claim(segments: list, delimiters: X12Delimiters, before: int, st_ref: str,
                    refs: References | None, guide: str) -> list[Claim | ConversionError]:
    """Each CLM parsed as a transaction set of its own: the header, the HL loops above it,
    its own segments, and an SE counting them."""
    header: list = []
    blocks: dict[str, list] = {}
    parents: dict[str, str] = {}
    hl: str | None = None
    claims: list[tuple[str | None, list]] = []
    current: list | None = None
    for name, fields in segments[:-1]:
        if name == "HL":
            hl, current = _field(fields, 1), None
            parents[hl] = _field(fields, 2)
            blocks[hl] = [(name, fields)]
        elif name == "CLM":
            current = [(name, fields)]
            claims.append((hl, current))
        elif current is not None:
            current.append((name, fields))
        elif hl is not None:
            blocks[hl].append((name, fields))
        else:
            header.append((name, fields))
    out: list[Claim | ConversionError] = []
    for k, (hl_id, own) in enumerate(claims):
        index, cid = before + k + 1, _field(own[0][1], 1) or None
        chain: list = []
        seen = set()
        while hl_id and hl_id in blocks and hl_id not in seen:
            seen.add(hl_id)
            chain[:0] = blocks[hl_id]
            hl_id = parents.get(hl_id)
        body = header + chain + own
        control = _field(segments[-1][1], 2)
        se = ("SE", ["SE", str(len(body) + 1), control])
        try:
            model = _parse([*body, se], delimiters, guide)
        except ValidationError as e:
            got = [_validation_error(e, index, cid, guide)]
        except Exception as e:  # the library's parser on hostile input: report, never crash
            got = [ConversionError(index, f"{st_ref}.2300", f"unparseable: "
                                   f"{type(e).__name__}: {e}", cid)]
        else:  # outside the catch-all: a reference lookup's error (Redis) is the caller's
            got = list(_claims(model, delimiters, index - 1, st_ref, refs))
        out.append(got[0] if got else ConversionError(index, f"{st_ref}.2300",
                                                      "the claim is not under an HL loop", cid))
    if not claims:
        out.append(ConversionError(before + 1, st_ref, "a transaction set without any CLM"))
    return out


def _validation_error(e: ValidationError, index: int, cid: str | None, guide: str
                      ) -> ConversionError:
    err = e.errors(include_url=False)[0]
    parts: list[str] = []
    for p in err["loc"]:
        if isinstance(p, int):
            if parts and parts[-1][0].isdigit():
                parts[-1] += f"[{p + 1}]"
        elif p.startswith("loop_"):
            parts.append(p.removeprefix("loop_").upper())
        elif p.endswith("_segment"):
            parts.append(p.removesuffix("_segment").upper())
        else:
            parts.append(p)
    if "2300" in [q.split("[")[0] for q in parts]:
        parts = parts[[q.split("[")[0] for q in parts].index("2300"):]
        parts[0] = "2300"
    msg = " ".join(str(err["msg"]).removeprefix("Value error, ").split())
    kind = "837I" if guide == INSTITUTIONAL else "837P"
    return ConversionError(index, ".".join(parts) or "ST", f"invalid {kind}: {msg}", cid)


def _claims(model: Any, delimiters: X12Delimiters, before: int, st_ref: str,
            refs: References | None) -> Iterator[Claim | ConversionError]:
    """Map each CLM of a validated 837P or 837I to the contract, in the order the file has
    them."""
    bht = model.header.bht_segment
    k = before
    for a in model.loop_2000a:
        for b in a.loop_2000b:
            groups = [(b.loop_2300 or [], b.loop_2010ba)] + [
                (c.loop_2300 or [], c.loop_2010ca) for c in b.loop_2000c or []]
            for claims, patient in groups:
                for clm in claims:
                    k += 1
                    cid = clm.clm_segment.patient_control_number
                    try:
                        fields, paths = _fields(clm, a, b, patient, _bht_time(bht),
                                                delimiters, refs)
                    except Unmappable as e:
                        yield ConversionError(k, e.path, e.message, cid)
                        continue
                    except (ValueError, TypeError, AttributeError, ArithmeticError) as e:
                        # a shape the guide allows that the mapping did not foresee
                        yield ConversionError(k, "2300", f"cannot map: {e}", cid)
                        continue
                    yield finish(k, cid, fields, paths)


def _bht_time(bht: Any) -> dt.datetime:
    """BHT04 date and BHT05 time (HHMM[SS[DD]]), read as UTC: X12 states no time zone."""
    t = (bht.transaction_set_creation_time or "0000").ljust(6, "0")
    if not t.isdigit():
        raise Unmappable("BHT05", f"{t!r} is not a HHMM[SS[DD]] time")
    return dt.datetime.combine(bht.transaction_set_creation_date, dt.time(
        int(t[:2]), int(t[2:4]), int(t[4:6]), int(t[6:8] or 0) * 10_000), dt.UTC)


def _fields(clm: Any, a: Any, b: Any, patient: Any, created: dt.datetime,
            delimiters: X12Delimiters, refs: References | None = None
            ) -> tuple[dict, dict[str, str]]:
    comp = delimiters.component_separator
    c = clm.clm_segment
    paths = {"": "2300", "claim_id": "2300.CLM01", "total_charge": "2300.CLM02",
             "place_of_service": "2300.CLM05-1", "diagnoses": "2300.HI",
             "member_id": "2010BA.NM109", "member_age": "DMG02", "member_sex": "DMG03",
             "provider_id": "2010AA.NM109", "provider_specialty": "2000A.PRV03",
             "submitted_at": "BHT04", "service_date": "2400.DTP03", "description": "2300.NTE02"}
    institutional = isinstance(clm, Loop2300I)
    dmg = patient.dmg_segment  # situational: without it, the reference data, else unknown
    member = patient.nm1_segment.identification_code or ""
    known = refs.member(member) if refs is not None and dmg is None else None
    birth = dmg.date_time_period if dmg is not None else (known[0] if known else None)
    sex = dmg.gender_code if dmg is not None else (known[1] if known else "U")
    # the clinician of an 837P (its rendering provider); an 837I's provider is the billing
    # facility, whose taxonomy is its specialty (the attending clinician's is not)
    rendering = None if institutional else clm.loop_2310b
    # the rendering provider's taxonomy, then the billing one's; each from the reference
    # data by NPI first, then its PRV; the first code that maps to a specialty of ours
    # (lazily: no lookup after it)
    taxonomies = (code() for code in (
        lambda: refs.taxonomy(rendering.nm1_segment.identification_code or "")
        if refs is not None and rendering else None,
        lambda: rendering.prv_segment.reference_identification
        if rendering and rendering.prv_segment else None,
        lambda: refs.taxonomy(a.loop_2010aa.nm1_segment.identification_code or "")
        if refs is not None else None,
        lambda: a.prv_segment.reference_identification if a.prv_segment else None))
    g2 = [r.reference_identification for r in b.loop_2010bb.ref_segment or []
          if r.reference_identification_qualifier == "G2"]
    # an 837P's provider is its rendering clinician; an 837I's the billing facility
    provider = g2[0] if g2 else (rendering.nm1_segment.identification_code
                                 if rendering and not institutional else None
                                 ) or a.loop_2010aa.nm1_segment.identification_code
    lines, dates = (_revenue_lines if institutional else _service_lines)(clm, comp, paths)
    if institutional:  # an inpatient stay's lines may carry no date: the statement's start
        dates += [_start(d.date_time_period, "2300.DTP03") for d in clm.dtp_segment
                  if d.date_time_qualifier == "434"]
    if not dates:
        raise Unmappable("2400.DTP", "no service date (DTP*472) on any line")
    day = min(dates)
    place = (c.health_care_service_location_information or "").split(comp)
    fields = {
        "claim_id": c.patient_control_number,
        "member_id": b.loop_2010ba.nm1_segment.identification_code or "",
        "provider_id": provider or "",
        # PRV is situational, and a code outside our specialties is common: unknown
        "provider_specialty": next((s for s in map(specialty_of, taxonomies) if s), None),
        "member_age": age_on(birth, day) if isinstance(birth, dt.date) else None,
        "member_sex": sex if sex in ("F", "M") else "U",
        "service_date": day,
        "submitted_at": created,
        "place_of_service": place[0],
        "diagnoses": _diagnoses(clm.hi_segment or []),
        **lines,
        "total_charge": money(c.total_claim_charge_amount),
    }
    if institutional:  # CLM05: facility type code, qualifier A, frequency
        bill = place[0] + (place[2] if len(place) > 2 else "")
        paths |= {"bill_type": "2300.CLM05", "icd10_pcs": "2300.HI"}
        fields |= {"claim_type": "institutional", "bill_type": bill, "icd10_pcs": _pcs(
            clm.hi_segment or [])}
        fields["place_of_service"] = place_of_bill(bill, [
            x["revenue_code"] for x in lines["revenue_lines"]]) or ""
        if not fields["place_of_service"]:
            raise Unmappable("2300.CLM05-1", f"facility type {place[0]!r}: no CMS place of "
                             "service stands for it (docs/formats.md)")
    notes = clm.nte_segment if isinstance(clm.nte_segment, list) else [clm.nte_segment]
    if notes and notes[0] is not None and notes[0].description:
        fields["description"] = notes[0].description
    return fields, paths


def _service_lines(clm: Any, comp: str, paths: dict[str, str]
                   ) -> tuple[dict[str, list[dict]], list[dt.date]]:
    """An 837P's SV1 lines, as procedure lines and fills, and their service dates."""
    procedures, medications, dates = [], [], []
    for k, line in enumerate(clm.loop_2400, 1):
        at = f"2400[{k}]"
        sv1 = line.sv1_segment
        dates += [_start(d.date_time_period, f"{at}.DTP03") for d in line.dtp_segment
                  if d.date_time_qualifier == "472"]
        parts = (sv1.product_service_id_qualifier or "").split(comp)
        if parts[0] != "HC" or len(parts) < 2:
            other = next((c for c in ">:^" if c != comp and c in parts[0]), None)
            raise Unmappable(f"{at}.SV101", f"{parts[0]!r}: no HCPCS/CPT code (qualifier HC)"
                             + (f"; its components are separated by {other!r}, not by the "
                                f"ISA16 separator {comp!r}" if other else ""))
        units = sv1.service_unit_count if sv1.service_unit_count is not None else Decimal(1)
        charge = money(sv1.line_item_charge_amount).quantize(Decimal("0.01"))
        if parts[1] == DRUG_CODE:
            text = parts[6] if len(parts) > 6 else ""
            ndc = line.loop_2410.lin_segment.national_drug_code_universal_product_number \
                if line.loop_2410 else None
            name, strength = drug_from_text(text) or (
                f"ndc:{ndc}" if ndc else (text.split(" ")[0] or DRUG_CODE), strength_in(text))
            days = DAYS.search(text)
            medications.append({
                "name": name, "strength_mg": strength or UNKNOWN_STRENGTH_MG,
                "quantity": float(units), "charge": charge,
                "days_supply": int(days.group(1)) if days else usual_days_supply(name)})
            paths[f"medications.{len(medications) - 1}"] = f"{at}.SV1"
            continue
        if units != int(units):
            raise Unmappable(f"{at}.SV104", f"{units} units: a procedure bills whole units")
        timed = sv1.unit_basis_measurement_code == "MJ"  # SV104 counts minutes, not units
        procedures.append({"code": parts[1].upper(), "units": 1 if timed else int(units),
                           "charge": charge, "modifiers": [m for m in parts[2:6] if m],
                           **({"minutes": int(units)} if timed else {})})
        paths[f"procedures.{len(procedures) - 1}"] = f"{at}.SV1"
    return {"procedures": procedures, "medications": medications}, dates


def _revenue_lines(clm: Any, comp: str, paths: dict[str, str]
                   ) -> tuple[dict[str, list[dict]], list[dt.date]]:
    """An 837I's SV2 lines, as revenue lines (SV204 DA: days, counted as units), and their
    service dates."""
    out, dates = [], []
    for k, line in enumerate(clm.loop_2400, 1):
        at = f"2400[{k}]"
        sv2 = line.sv2_segment
        if line.dtp_segment is not None:
            dates.append(_start(line.dtp_segment.date_time_period, f"{at}.DTP03"))
        parts = (sv2.composite_medical_procedure_identifier or "").split(comp)
        # HC: a HCPCS/CPT code; another qualifier (HP: a HIPPS rate code of a nursing or
        # home health bill) names no service code of ours: the line is its revenue code
        hcpcs = parts[0] == "HC" and len(parts) > 1 and bool(parts[1])
        units = sv2.service_unit_count
        if units != int(units):
            raise Unmappable(f"{at}.SV205", f"{units} units: a service bills whole units")
        out.append({"revenue_code": sv2.service_line_revenue_code,
                    **({"code": parts[1].upper()} if hcpcs else {}),
                    "units": int(units),
                    "charge": money(sv2.line_item_charge_amount).quantize(Decimal("0.01")),
                    "modifiers": [m for m in parts[2:6] if m] if hcpcs else []})
        paths[f"revenue_lines.{len(out) - 1}"] = f"{at}.SV2"
    return {"revenue_lines": out}, dates


def _start(value: Any, path: str) -> dt.date:
    """A DTP date: D8 (parsed by the library) or the first day of an RD8 range."""
    if isinstance(value, dt.date):
        return value
    try:
        return dt.datetime.strptime(str(value)[:8], "%Y%m%d").date()
    except ValueError:
        raise Unmappable(path, f"{value!r} is not a CCYYMMDD date") from None


def _components(his: list) -> Iterator[tuple[int, str, str]]:
    """(position, qualifier, code) of every HI component, segment by segment."""
    for h in his:
        for k in range(1, 13):
            code = getattr(h, f"health_care_code_{k}")
            if code:
                yield k, code[0], code[1] if len(code) > 1 else ""


def _hi(codes: list[tuple]) -> dict:
    """One HI segment of composite components (qualifier, code, ...)."""
    return {f"health_care_code_{k + 1}": list(q) for k, q in enumerate(codes)}


def _diagnoses(his: list) -> list[str]:
    out = []
    for k, qualifier, value in _components(his):
        if qualifier in ICD9:
            raise Unmappable(f"2300.HI{k:02d}-1", f"qualifier {qualifier} is ICD-9-CM; the "
                             "contract takes ICD-10-CM (ABK/ABF)")
        if qualifier in ICD10:
            out.append(dotted_icd10(value))
    return list(dict.fromkeys(out))  # a code sent twice (ABK and ABF) counts once, as in FHIR


def _pcs(his: list) -> list[str]:
    """An 837I's ICD-10-PCS procedures (HI BBR principal, BBQ other), in order, once each."""
    return list(dict.fromkeys(code for _, qualifier, code in _components(his)
                              if code and qualifier in PCS))


# -- writing ------------------------------------------------------------------------------

def write(claims: list[Claim], created: dt.datetime | None = None) -> str:
    """Contract claims as one X12 5010 interchange: one transaction set per claim, so each
    claim keeps its own BHT creation time (submitted_at, UTC, to the second); an 837P for
    a professional claim, an 837I for an institutional one.

    Raises ValueError for a claim X12 cannot carry: a claim id over CLM01's 38
    characters, a description over NTE02's 80, text holding X12 delimiters, a specialty
    without a NUCC code, a sex with an unknown age (DMG holds the sex only beside a birth
    date); on an 837I, an unknown type of bill or revenue code, a place its type of bill
    and lines do not stand for, more than 50 lines. `created` stamps the ISA/GS envelope
    (default: the latest submitted_at, so the same claims give the same bytes).
    """
    if not claims:
        raise ValueError("an interchange needs at least one claim")
    sets = [_transaction_set(c, k) for k, c in enumerate(claims, 1)]
    stamp = created or max(c.submitted_at for c in claims).astimezone(dt.UTC)
    return write_transactions(sets, sender_id="CLAIMSCOPE", receiver_id="PAYER",
                              created=stamp.replace(tzinfo=None)) + "\n"


def _npi(seed: str) -> str:
    """A check-digit-valid NPI derived from the provider id (the writer has no real one)."""
    body = f"1{zlib.crc32(seed.encode()) % 10**8:08d}"
    digits = [int(d) for d in "80840" + body]  # the 80840 prefix of the Luhn check (CMS)
    total = sum(d if i % 2 else sum(divmod(d * 2, 10)) for i, d in enumerate(reversed(digits)))
    return body + str((10 - total % 10) % 10)


def _check_text(value: str, what: str, limit: int) -> str:
    if len(value) > limit or not X12_TEXT.match(value):
        raise ValueError(f"{what} {value[:40]!r}: X12 carries at most {limit} characters "
                         "without delimiters (* ~ : ^)")
    return value


# What the contract may hold as unknown that an 837 cannot carry (model.claims)
UNWRITABLE = ("diagnoses", "services", "line_charges", "icd10_pcs")


def _transaction_set(claim: Claim, number: int) -> Any:
    control = f"{number:04d}"
    at = claim.submitted_at.astimezone(dt.UTC)
    if at.microsecond % 10_000:
        raise ValueError(f"claim {claim.claim_id}: submitted_at has sub-centisecond digits; "
                         "BHT05 holds hundredths of a second")
    cid = _check_text(claim.claim_id, "claim_id", 38)
    if unknown := [u for u in claim.unknown if u in UNWRITABLE]:
        raise ValueError(f"claim {cid}: {', '.join(unknown)} unknown: an 837 has no way to "
                         "write an unknown code or line charge (HI and SV1/SV2 require them)")
    institutional = claim.claim_type == "institutional"
    clm = _institutional_clm(claim, cid) if institutional else _professional_clm(claim, cid)
    if claim.description is not None:
        note = {"note_reference_code": "ADD",
                "description": _check_text(claim.description, "description", 80)}
        clm["nte_segment"] = [note] if institutional else note
    structure = _envelope_of(claim, control, at, clm, INSTITUTIONAL if institutional
                             else PROFESSIONAL)
    structure["footer"]["se_segment"]["transaction_segment_count"] = count_segments(structure)
    return (HealthCareClaimInstitutional if institutional else HealthCareClaimProfessional)(
        **structure)


def _professional_clm(claim: Claim, cid: str) -> dict:
    """An 837P's 2300 loop: CLM with the place of service, HI, one SV1 line a service."""
    day = claim.service_date.strftime("%Y%m%d")
    pointers = ":".join(str(k) for k in range(1, min(4, len(claim.diagnoses)) + 1))
    lines = []
    for p in claim.procedures:  # a timed line bills its minutes (SV103 MJ)
        lines.append((":".join(["HC", p.code, *p.modifiers]), p.charge,
                      number_units(p.minutes or p.units), "MJ" if p.minutes else "UN"))
    for m in claim.medications:
        text = _check_text(f"{drug_text(m.name, m.strength_mg)} {m.days_supply} DAYS",
                           "drug", 80)
        lines.append((f"HC:{DRUG_CODE}:::::{text}", m.charge, number_units(m.quantity), "UN"))
    service_lines = [{
        "lx_segment": {"assigned_number": str(k)},
        "sv1_segment": {"product_service_id_qualifier": sv101, "line_item_charge_amount": charge,
                        "unit_basis_measurement_code": basis, "service_unit_count": units,
                        "composite_diagnosis_code_pointer": pointers},
        "dtp_segment": [{"date_time_qualifier": "472", "date_time_period_format_qualifier": "D8",
                         "date_time_period": day}],
    } for k, (sv101, charge, units, basis) in enumerate(lines, 1)]
    dx = [("ABK" if k == 0 else "ABF", code.replace(".", "")) for k, code in
          enumerate(claim.diagnoses)]
    return {"clm_segment": _clm(claim, cid, f"{claim.place_of_service}:B:1"),
            "hi_segment": [_hi(dx)],
            "loop_2400": service_lines}


def _institutional_clm(claim: Claim, cid: str) -> dict:
    """An 837I's 2300 loop: CLM with the type of bill, the statement date (DTP*434), CL1,
    HI with the diagnoses and the ICD-10-PCS procedures, one SV2 line a revenue line. CL1
    is required and the contract does not hold it: written as admission type 9
    (information not available) and patient status 01 (discharged home)."""
    if claim.bill_type is None:
        raise ValueError(f"claim {cid}: an 837I needs the type of bill (CLM05)")
    place = place_of_bill(claim.bill_type, [r.revenue_code for r in claim.revenue_lines])
    if place != claim.place_of_service:
        raise ValueError(f"claim {cid}: an 837I has no place of service; type of bill "
                         f"{claim.bill_type} and its lines stand for {place}, not "
                         f"{claim.place_of_service}")
    if any(r.revenue_code is None for r in claim.revenue_lines):
        raise ValueError(f"claim {cid}: an 837I line needs its revenue code (SV201)")
    if len(claim.revenue_lines) > 50:
        raise ValueError(f"claim {cid}: {len(claim.revenue_lines)} lines; an 837I holds 50")
    day = claim.service_date.strftime("%Y%m%d")
    # the guide's HI loops: the principal diagnosis alone (ABK), the others (ABF) 12 to a
    # segment, the principal procedure alone (BBR), the others (BBQ) 12 to a segment
    dx = [code.replace(".", "") for code in claim.diagnoses]
    his = [[("ABK", dx[0])], *_twelves([("ABF", c) for c in dx[1:]])]
    if claim.icd10_pcs:
        pcs = [("BBR" if k == 0 else "BBQ", c, "D8", day)
               for k, c in enumerate(claim.icd10_pcs)]
        his += [pcs[:1], *_twelves(pcs[1:])]
    return {
        "clm_segment": _clm(claim, cid, f"{claim.bill_type[:2]}:A:{claim.bill_type[2]}"),
        "dtp_segment": [{"date_time_qualifier": "434",
                         "date_time_period_format_qualifier": "RD8",
                         "date_time_period": f"{day}-{day}"}],
        "cl1_segment": {"admission_type_code": "9", "patient_status_code": "01"},
        "hi_segment": [_hi(h) for h in his],
        "loop_2400": [{
            "lx_segment": {"assigned_number": str(k)},
            "sv2_segment": {"service_line_revenue_code": r.revenue_code,
                            "composite_medical_procedure_identifier":
                                ":".join(["HC", r.code, *r.modifiers]) if r.code else None,
                            "line_item_charge_amount": r.charge, "measurement_code": "UN",
                            "service_unit_count": Decimal(r.units)},
            "dtp_segment": {"date_time_qualifier": "472", "date_time_period_format_qualifier": "D8",
                            "date_time_period": day},
        } for k, r in enumerate(claim.revenue_lines, 1)],
    }


def _twelves(codes: list) -> list[list]:
    """`codes` in HI segments of at most 12 components each."""
    return [codes[k:k + 12] for k in range(0, len(codes), 12)]


def _clm(claim: Claim, cid: str, location: str) -> dict:
    return {"patient_control_number": cid, "total_claim_charge_amount": claim.total_charge,
            "health_care_service_location_information": location,
            "provider_or_supplier_signature_indicator": "Y",
            "provider_accept_assignment_code": "A",
            "benefit_assignment_certification_indicator": "Y", "release_of_information_code": "Y"}


def _envelope_of(claim: Claim, control: str, at: dt.datetime, clm: dict, guide: str) -> dict:
    """The transaction set around one claim's 2300 loop: header, submitter, receiver,
    billing provider, subscriber (the member) and payer."""
    if claim.member_age is None and claim.member_sex != "U":
        raise ValueError(f"claim {claim.claim_id}: X12 carries the sex in DMG only with a "
                         "birth date, and member_age is unknown")
    birth = birth_date_for(claim.member_age, claim.service_date, claim.member_id
                           ) if claim.member_age is not None else None
    member = _check_text(claim.member_id, "member_id", 60)
    provider = _check_text(claim.provider_id, "provider_id", 50)
    tax_id = {"reference_identification_qualifier": "EI",
              "reference_identification": f"{zlib.crc32(provider.encode()) % 10**9:09d}"}
    address = {"n3_segment": {"address_information_1": "ADDRESS UNKNOWN"},
               "n4_segment": {"city_name": "UNKNOWN", "state_province_code": "NY",
                              "postal_code": "10001"}}
    structure = {
        "header": {
            "st_segment": {"transaction_set_identifier_code": "837",
                           "transaction_set_control_number": control,
                           "implementation_convention_reference": guide},
            "bht_segment": {"hierarchical_structure_code": "0019",
                            "transaction_set_purpose_code": "00",
                            "submitter_transactional_identifier": control,
                            "transaction_set_creation_date": at.strftime("%Y%m%d"),
                            "transaction_set_creation_time": at.strftime("%H%M%S") + (
                                f"{at.microsecond // 10_000:02d}" if at.microsecond else ""),
                            "transaction_type_code": "CH"}},
        "loop_1000a": {"nm1_segment": {"entity_identifier_code": "41", "entity_type_qualifier": "2",
                                       "name_last_or_organization_name": "CLAIMSCOPE",
                                       "identification_code_qualifier": "46",
                                       "identification_code": "CLAIMSCOPE"},
                       "per_segment": [{"contact_function_code": "IC", "name": "CLAIMSCOPE",
                                        "communication_number_qualifier_1": "TE",
                                        "communication_number_1": "0000000000"}]},
        "loop_1000b": {"nm1_segment": {"entity_identifier_code": "40", "entity_type_qualifier": "2",
                                       "name_last_or_organization_name": "PAYER",
                                       "identification_code_qualifier": "46",
                                       "identification_code": "PAYER"}},
        "loop_2000a": [{
            "hl_segment": {"hierarchical_id_number": "1", "hierarchical_level_code": "20",
                           "hierarchical_child_code": "1"},
            # PRV is situational: left out for an unknown specialty
            "prv_segment": {"provider_code": "BI", "reference_identification_qualifier": "PXC",
                            "reference_identification": taxonomy_of(claim.provider_specialty)}
            if claim.provider_specialty else None,
            "loop_2010aa": {"nm1_segment": {"entity_identifier_code": "85",
                                            "entity_type_qualifier": "2",
                                            "name_last_or_organization_name": provider,
                                            "identification_code_qualifier": "XX",
                                            "identification_code": _npi(provider)},
                            **address,
                            # the tax id: one REF in an 837I, a list of them in an 837P
                            "ref_segment": tax_id if guide == INSTITUTIONAL else [tax_id]},
            "loop_2000b": [{
                "hl_segment": {"hierarchical_id_number": "2", "hierarchical_parent_id_number": "1",
                               "hierarchical_level_code": "22", "hierarchical_child_code": "0"},
                "sbr_segment": {"payer_responsibility_code": "P",
                                "individual_relationship_code": "18",
                                "claim_filing_indicator_code": "CI"},
                "loop_2010ba": {"nm1_segment": {"entity_identifier_code": "IL",
                                                "entity_type_qualifier": "1",
                                                "name_last_or_organization_name": member,
                                                "identification_code_qualifier": "MI",
                                                "identification_code": member},
                                # DMG needs the birth date: without it (an unknown age,
                                # and so sex U, above) the segment is left out
                                "dmg_segment": {"date_time_period_format_qualifier": "D8",
                                                "date_time_period": birth.strftime("%Y%m%d"),
                                                # x12sdk takes F/M only: U goes absent
                                                "gender_code": claim.member_sex if
                                                claim.member_sex != "U" else None}
                                if birth else None},
                "loop_2010bb": {"nm1_segment": {"entity_identifier_code": "PR",
                                                "entity_type_qualifier": "2",
                                                "name_last_or_organization_name": "PAYER",
                                                "identification_code_qualifier": "PI",
                                                "identification_code": "PAYER"},
                                "ref_segment": [{"reference_identification_qualifier": "G2",
                                                 "reference_identification": provider}]},
                "loop_2300": [clm],
            }],
        }],
        "footer": {"se_segment": {"transaction_segment_count": 0,
                                  "transaction_set_control_number": control}},
    }
    return structure


def number_units(x: float | int) -> Decimal:
    """SV104 as an exact decimal: 30, 0.5."""
    return Decimal(repr(float(x))).normalize() if x != int(x) else Decimal(int(x))
