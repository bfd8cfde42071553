"""The payer edits (`model.edits`) against cases drawn from the CMS tables themselves, not
from the generator: every violation fires its channel with the exact citation, every case
the rule allows passes; and the generator's clean stream breaks none of them."""

from __future__ import annotations

import random

import numpy as np
import pytest

from model.checks import MemoryState
from model.claims import Claim
from model.cms.tables import addon_table, folder, mce_table, mue_table
from model.edits import NCCI_MODIFIERS, VISIT_MODIFIERS, PayerEdits, claim_edits, is_visit
from model.generator import CLEAN, ClaimGenerator

SEED = 20261204


def claim(lines: list[tuple[str, int, list[str]]], dx: tuple[str, ...] = ("I10",), age: int = 40,
          sex: str = "F", cid: str = "C1", member: str = "M1") -> Claim:
    return Claim.model_validate({
        "claim_id": cid, "member_id": member, "provider_id": "P1",
        "provider_specialty": "family_medicine", "member_age": age, "member_sex": sex,
        "service_date": "2026-03-02", "submitted_at": "2026-03-02T12:00:00+00:00",
        "place_of_service": "11", "diagnoses": list(dx),
        "procedures": [{"code": c, "units": u, "charge": 10.0 * u, "modifiers": m}
                       for c, u, m in lines],
        "medications": [], "total_charge": 10.0 * sum(u for _, u, _ in lines)})


def cites(c: Claim, edit: str, codes: tuple[str, ...]) -> bool:
    return any(h.edit == edit and h.codes == codes and h.table_version
               for h in claim_edits(c))


def test_ptp_pairs_from_the_table_fire_as_cms_writes_them():
    """600 random active pairs, both indicators: indicator 0 fires with and without a
    modifier; indicator 1 fires without one and passes with an NCCI-associated modifier on
    the column-2 line (25 when that line is a visit)."""
    rng = np.random.default_rng(SEED)
    with np.load(folder() / "ncci_ptp_practitioner.npz", allow_pickle=False) as npz:
        codes, mods = npz["codes"].tolist(), npz["modifier"]
        col1, col2 = npz["column1"], npz["column2"]
    picked = np.concatenate([rng.choice(np.flatnonzero(mods == m), 300, replace=False)
                             for m in (0, 1)])
    allowed = fired = 0
    for i in picked:
        a, b, ind = codes[col1[i]], codes[col2[i]], int(mods[i])
        mod = "25" if is_visit(b) else "59"
        assert cites(claim([(a, 1, []), (b, 1, [])]), "ncci_ptp", (a, b)), (a, b, ind)
        with_mod = claim([(a, 1, []), (b, 1, [mod])])
        assert cites(with_mod, "ncci_ptp", (a, b)) == (ind == 0), (a, b, ind, mod)
        fired += 1
        allowed += ind == 1
    assert fired == 600 and allowed == 300
    # a visit's 59 is not its 25: NCCI lets only 25 and 57 bypass an edit on an E/M code
    assert cites(claim([("20610", 1, []), ("99213", 1, ["59"])]), "ncci_ptp", ("20610", "99213"))
    assert not cites(claim([("20610", 1, []), ("99213", 1, ["57"])]), "ncci_ptp",
                     ("20610", "99213"))
    # the modifier belongs on the column-2 line: on column 1 it bypasses nothing
    assert cites(claim([("93000", 1, ["59"]), ("93010", 1, [])]), "ncci_ptp", ("93000", "93010"))
    # indicator 0 with modifiers on both lines: still never together
    assert cites(claim([("45380", 1, ["59"]), ("45378", 1, ["59", "XS"])]), "ncci_ptp",
                 ("45380", "45378"))
    assert VISIT_MODIFIERS < NCCI_MODIFIERS


def test_mues_at_and_over_their_limits():
    """300 codes: at the MUE passes; over it fires, on one line for MAI 1 and over the
    day's lines for MAI 2 and 3; an MUE of 0 (Medicare pays none) never fires."""
    r = random.Random(SEED)
    table = mue_table()
    codes = r.sample(sorted(c for c, m in table.items() if 0 < m.units <= 50), 300)
    for code in codes:
        m = table[code]
        at = claim([(code, m.units, [])])
        assert not any(h.edit == "mue" for h in claim_edits(at)), code
        assert cites(claim([(code, m.units + 1, [])]), "mue", (code,)), code
        split = claim([(code, m.units, []), (code, 1, ["76"])])
        assert cites(split, "mue", (code,)) == (m.mai != 1), (code, m.mai)
    zero = next(c for c, m in table.items() if m.units == 0)
    assert not any(h.edit == "mue" for h in claim_edits(claim([(zero, 3, [])])))


def test_per_day_mues_count_the_days_other_claims_once_each():
    """A MAI-3 MUE counts the provider's lines for the member that day across claims, in
    the cross-claim state; a batch seen again (redelivery) does not count twice."""
    assert mue_table()["36415"].units == 2 and mue_table()["36415"].mai == 3
    edits = PayerEdits(MemoryState())
    one = claim([("36415", 2, [])], cid="D1")
    two = claim([("36415", 2, [])], cid="D2")
    other = claim([("36415", 2, [])], cid="D3", member="M2")
    assert edits.run([one]) == [[]]
    got = edits.run([two, other])
    assert [h.edit for h in got[0]] == ["mue"] and "4 units that day" in got[0][0].detail
    assert got[1] == []  # another member's day
    assert edits.run([two, other]) == got  # redelivered: each claim counts once
    twice = PayerEdits(MemoryState()).run([one, one])  # a duplicate message in one batch
    assert twice == [[], []]
    together = PayerEdits(MemoryState()).run([one, two])  # one batch, in order
    assert together[0] == [] and [h.edit for h in together[1]] == ["mue"]
    assert PayerEdits(None).run([two]) == [[]]  # without state each claim stands alone


def test_a_day_spans_the_providers_claims_for_the_member():
    """PTP pairs and add-on primaries count the provider's earlier claims for the member
    that day, as CMS counts the day: a pair split over two claims is cited on the second,
    an add-on whose primary came earlier passes, a pair already cited is not cited again,
    another member's or another day's claim counts for nothing."""
    edits = PayerEdits(MemoryState())
    colon = claim([("45380", 1, [])], cid="A1")
    split = claim([("45378", 1, [])], cid="A2")
    other = claim([("45378", 1, [])], cid="A3", member="M2")
    got = edits.run([colon, split, other])
    assert got[0] == [] and got[2] == []
    assert [(h.edit, h.codes) for h in got[1]] == [("ncci_ptp", ("45380", "45378"))]
    visit = edits.run([claim([("99213", 1, [])], cid="A4")])  # a visit the same day
    assert {h.codes for h in visit[0]} == {("45380", "99213"), ("45378", "99213")}
    again = edits.run([claim([("99213", 1, ["25"])], cid="A5")])  # with its 25 it passes
    assert again == [[]]  # and the pair of A1 and A2, cited on A2, is not cited again
    assert edits.run([claim([("99215", 1, [])], cid="B1", member="M3"),
                      claim([("99417", 1, [])], cid="B2", member="M3")])[1] == []
    late = PayerEdits(MemoryState()).run([claim([("99417", 1, [])], cid="L1"),
                                         claim([("99215", 1, [])], cid="L2")])
    assert [h.edit for h in late[0]] == ["add_on"] and late[1] == []  # a stream cannot wait


def test_add_ons_without_and_with_their_primaries():
    """100 type-1 add-ons: alone they fire, with a listed primary they pass. Types 2 and 3
    let the contractor accept other primaries: alone they do not fire."""
    r = random.Random(SEED)
    table = addon_table()
    for code in r.sample(sorted(c for c, a in table.items() if a.edit_type == 1), 100):
        primary = sorted(table[code].primaries)[0]
        assert cites(claim([(code, 1, [])]), "add_on", (code,)), code
        both = claim([(primary, 1, []), (code, 1, [])])
        assert not cites(both, "add_on", (code,)), (code, primary)  # (a primary may be
        # an add-on itself, citing its own primaries)
    for kind in (2, 3):
        code = next(c for c, a in sorted(table.items()) if a.edit_type == kind)
        assert not cites(claim([(code, 1, [])]), "add_on", (code,)), (kind, code)


@pytest.mark.parametrize("kind", ["age", "sex"])
def test_mce_conflicts_fire_and_plausible_members_pass(kind: str):
    """100 diagnoses per kind with an MCE edit: a member outside it fires `mce_<kind>`
    naming the code; one inside passes."""
    r = random.Random(SEED)
    table = mce_table()
    if kind == "age":
        codes = r.sample(sorted(c for c, e in table.items() if e.age_edit and e.min_age is not None
                                and (e.min_age > 0 or (e.max_age or 124) < 124)), 100)
    else:
        codes = r.sample(sorted(c for c, e in table.items() if e.sex), 100)
    for code in codes:
        e = table[code]
        fits_sex = e.sex or "F"
        inside = ((e.min_age or 0) + (e.max_age if e.max_age is not None else 124)) // 2
        if kind == "age":
            outside = (e.max_age + 1) if e.max_age is not None and e.max_age < 124 else (
                e.min_age - 1)
            bad, good = claim([("99213", 1, [])], (code,), outside, fits_sex), \
                claim([("99213", 1, [])], (code,), inside, fits_sex)
        else:
            other = "M" if e.sex == "F" else "F"
            bad = claim([("99213", 1, [])], (code,), inside, other)
            good = claim([("99213", 1, [])], (code,), inside, e.sex)
        assert cites(bad, f"mce_{kind}", (code,)), (code, e)
        assert not any(h.edit.startswith("mce_") for h in claim_edits(good)), (code, e)
        if kind == "age":  # "is a adult (15-124) diagnosis" was printed once
            detail = next(h.detail for h in claim_edits(bad) if h.edit == "mce_age")
            assert detail.startswith(f"MCE age edit: {code} is a diagnosis for the "), detail
            assert detail.endswith(f" age group, the member is {outside}"), detail
        if kind == "age":  # the band's own ends are inside it
            for edge in {e.min_age or 0, min(120, e.max_age if e.max_age is not None else 120)}:
                at = claim([("99213", 1, [])], (code,), edge, fits_sex)
                assert not cites(at, "mce_age", (code,)), (code, edge)


def test_the_generators_clean_stream_breaks_no_edit_and_its_frauds_do():
    """Honest billers in the generator's world respect the edits; unbundling breaks PTP
    and demographic impossibility an MCE edit, every time."""
    items = list(ClaimGenerator(seed=31, fraud_rate=0.1, size=6000).generate(6000))
    hits = PayerEdits(MemoryState()).run([Claim.model_validate(i.claim) for i in items])
    clean = [h for i, h in zip(items, hits, strict=True) if i.fraud_pattern == "none"]
    assert len(clean) > 5000 and not any(clean), [h for h in clean if h][:3]
    for pattern, edits in (("unbundling", {"ncci_ptp"}),
                           ("demographic_impossibility", {"mce_age", "mce_sex"})):
        mine = [h for i, h in zip(items, hits, strict=True) if i.fraud_pattern == pattern]
        assert mine and all({x.edit for x in h} & edits for h in mine), pattern


def test_a_second_therapy_session_of_the_day_keeps_the_days_units_within_the_mue():
    """The generator's odd second physical-therapy claim of a day (modifier 76): the payer
    counts 97110's units over the day (MUE 6), so an honest biller's second session fits
    what the first left; before, 7 of 95,000 clean claims on the yardstick broke it."""
    from model.generator import day_units_within_mue

    first = {"procedures": [{"code": "97110", "units": 4, "charge": 120.0, "modifiers": []}]}
    second = day_units_within_mue(
        {"code": "97110", "units": 4, "charge": 120.0, "modifiers": []}, first)
    assert second["units"] == 2 and second["charge"] == 60.0
    assert not PayerEdits(MemoryState()).run([
        claim([("97110", 4, [])], cid="C1"), claim([("97110", second["units"], ["76"])],
                                                    cid="C2")])[1]
    small = {"code": "97110", "units": 1, "charge": 30.0, "modifiers": []}
    assert day_units_within_mue(small, first) == small  # room enough: as drawn


def test_eval_reports_the_edits_alone_the_model_alone_and_either():
    """`claimscope eval`'s edits report, on a small stream: the edits find every unbundled
    claim and no clean one; `either` is the union of the two ways."""
    from model.quality.evaluate import edits_report, make_stream

    test = make_stream(3000, 43, 0.2)
    model = np.zeros(len(test.patterns), dtype=bool)
    model[::50] = True  # a stand-in model: every 50th claim
    r = edits_report(test, model)
    assert r.edits.per_pattern["unbundling"] == 1.0 and r.edits.clean_fpr == 0.0
    assert not any(r.fired_clean.values()) and r.fired["ncci_ptp"] > 0
    assert r.either.recall >= max(r.edits.recall, r.model.recall)
    assert r.model.clean_fpr > 0 and set(r.to_json()) == {
        "edits", "model", "either", "fired", "fired_clean"}
    # per pattern against the clean claims: the edits flag no clean claim, so every
    # pattern they flag they flag precisely; the stand-in model flags clean claims too
    assert r.edits.per_pattern_precision["unbundling"] == 1.0
    assert set(r.model.per_pattern_precision) == set(r.model.per_pattern)
    clean, pat = test.patterns == CLEAN, test.patterns == "unbundling"
    hit = model & (clean | pat)
    assert r.model.per_pattern_precision["unbundling"] == round(float(pat[hit].mean()), 4)


def test_no_edit_fires_on_the_everyday_care_suite():
    """Ordinary medicine, written by hand, breaks no CMS edit: every kind of the suite, 12
    claims each at its usual ages, sexes and prices, as one stream."""
    from model.quality.everyday import clean_claims, load_kinds

    claims = [Claim.model_validate(c) for _, c in clean_claims(load_kinds(), 12, seed=3)]
    fired = [(c.claim_id, h) for c, h in zip(claims, PayerEdits(MemoryState()).run(claims),
                                             strict=True) if h]
    assert not fired, fired[:5]


def test_citations_name_the_rule_its_indicator_and_the_table_release():
    """The issue's spot checks, cited as an SIU reviewer reads them: the codes, the
    indicator (modifier or MUE adjudication) with CMS's rationale, and the table's release
    as VERSION.json records it."""
    from model.cms.tables import versions

    release = {t: v.get("release") for t, v in versions()["tables"].items()}

    def only(c: Claim):
        (hit,) = claim_edits(c)
        return hit

    ptp = only(claim([("45380", 1, []), ("45378", 1, ["59"])]))
    assert ptp.codes == ("45380", "45378")
    assert "modifier indicator 0" in ptp.detail and "45378 is included in 45380" in ptp.detail
    assert "(CPT Separate procedure definition)" in ptp.detail
    assert ptp.table_version == release["ncci_ptp_practitioner.npz"]
    mue = only(claim([("36415", 3, [])]))
    assert mue.codes == ("36415",) and "the most is 2" in mue.detail
    assert "per day" in mue.detail and mue.table_version == release["mue_practitioner.csv"]
    addon = only(claim([("99417", 1, [])]))
    assert "99205, 99215" in addon.detail and addon.table_version == release["addon.csv"]
    sex = only(claim([("99213", 1, [])], dx=("N40.0",), sex="F"))
    assert sex.edit == "mce_sex" and "since 2024-10-01" in sex.detail
    assert "FY2024" in sex.table_version
    age = only(claim([("99213", 1, [])], dx=("O80",), age=70))
    assert age.edit == "mce_age" and "the member is 70" in age.detail
