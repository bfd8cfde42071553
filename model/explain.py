"""Explanations of the channel that decided: attribution, attention partners, a reason.

For a claim the model flags (or every claim with `Scorer(explain="all")`), everything is
computed for the claims of a scoring call together, from a pass that keeps their attention
weights and N_CANDIDATES more forward rows each:

- **attribution**: leave-one-out. Each candidate token is taken out of the claim (made
  padding, which attention skips; a removed code's numbers lose their line's code too)
  and the deciding logit is read again: how far it falls is the token's attribution.
  The deciding logit is the combined one, `a * fraud_logit + b * anomaly_logit`, when the
  fraud model fired or nothing did, and the anomaly logit alone when only the anomaly
  channel fired. The candidates are the claim's `N_CANDIDATES` tokens the anomaly head
  finds most surprising, so that the cost is N_CANDIDATES forward rows per flagged claim
  rather than one per token. The tokens with the largest fall are the claim's
  `top_tokens`: what `claimscope eval` resamples to test faithfulness (ERASER). Gradient
  x input, tried first, named an injected mismatch among its top three on 63% of
  mismatch claims, against 98.5% for leave-one-out over three candidates and 100% over
  every token (20,000 claims, seed 11): every path from a token goes through a layer
  norm, and the Support readings are counts, not differentiable. A taken-out token
  leaves a hole training never showed (a line without its price); resampling an in-range
  value instead, as the yardstick does, would make the attribution depend on one draw.
- **pairs**: each top token and the token it attends to most, in any layer and head,
  among the fields it is read against (a drug against the diagnoses; a price or a unit
  count against its own line's code). Attention is *specific*: the weight minus the mean
  weight the key gets from every token in that head, since some heads park most of their
  attention on one token (a sink, here often the claim total), and raw weights would name
  that sink for every token. The reported weight is the raw one.
- **field importance**: the positive attribution summed per field type.
- **reason**: one line for the top token, read with its partner, in clinical words where
  the vocabulary can state the cause.

A claim nothing flags gets none of these: its reason says nothing is unusual.
"""

from __future__ import annotations

import numpy as np
import torch

from model.tokenizer import FIELD_ID, FIELDS, LINE_OFFSET, Token
from model.vocabulary import Vocabulary

N_TOP = 3  # top tokens, as many as the yardstick's k = 3
N_CANDIDATES = 5  # tokens taken out one at a time per explained claim
MINOR = 0.1  # a token whose fall is under this share of the top token's is not named
N_SURPRISING = 3
PAIR_FIELDS = [FIELD_ID[f] for f in FIELDS if f not in ("pad", "cls", "units", "days")]
CONTENT = np.array([f not in ("pad", "cls") for f in FIELDS])  # field id -> a claim's own
LINE_BACK = np.array([LINE_OFFSET.get(f, 0) for f in FIELDS])  # field id -> offset to line head
# Whom a token is read against: a drug against the diagnoses, a diagnosis against the
# treatments, a price or a unit count against its line's code (LINE_BACK)...
_PARTNERS = {"diagnosis": ("procedure", "drug"), "procedure": ("diagnosis",),
             "drug": ("diagnosis",), "specialty": ("procedure", "drug"),
             "age": ("diagnosis", "procedure", "drug"), "sex": ("diagnosis", "procedure", "drug")}
PARTNER = np.zeros((len(FIELDS), len(FIELDS)), dtype=bool)  # [token's field, partner field]
for _f in FIELDS[2:]:
    for _p in _PARTNERS.get(_f, ("procedure", "drug")):
        PARTNER[FIELD_ID[_f], FIELD_ID[_p]] = True


def candidates(surprise: np.ndarray, values: np.ndarray, fields: np.ndarray,
               k: int = N_CANDIDATES) -> np.ndarray:
    """(B, k) positions of each claim's k most surprising content tokens, most first
    (fewer content tokens than k: the rest are padding positions, surprise -inf)."""
    ranked = np.where(CONTENT[fields] & (values != 0), surprise, -np.inf)
    return np.argsort(-ranked, axis=1)[:, :k]


def without(values: np.ndarray, fields: np.ndarray, positions: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """(B * k, T) values and fields: row b * k + n is claim b with the token at
    positions[b, n] taken out (turned into padding)."""
    B, k = positions.shape
    v, f = np.repeat(values, k, axis=0), np.repeat(fields, k, axis=0)
    rows = np.arange(B * k)
    v[rows, positions.ravel()] = 0
    f[rows, positions.ravel()] = 0
    return v, f


def partners(attentions: list[torch.Tensor], fields: np.ndarray, queries: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For each (row, query position) in `queries` (B, k): the key it attends to most
    specifically among its partner fields, the (layer, head) and raw weight of that edge,
    and whether there was one, each (B, k). A price, unit count or days supply partners
    its own line's code."""
    a = torch.stack(attentions, dim=1).float()  # (B, L, H, T, T)
    B, L, H, T, _ = a.shape
    keep = torch.as_tensor(np.isin(fields, PAIR_FIELDS), device=a.device)  # (B, T)
    received = (a * keep[:, None, None, :, None]).sum(dim=3) / keep.sum(dim=1).clamp(
        min=1)[:, None, None, None]  # (B, L, H, T): mean weight each key gets
    q = torch.as_tensor(queries, device=a.device)
    rows = torch.arange(B, device=a.device)[:, None]
    edges = a[rows, :, :, q]  # (B, k, L, H, T): what each query reads
    specific = edges - received[:, None]
    qf = fields[np.arange(B)[:, None], queries]  # (B, k)
    ok = PARTNER[qf[:, :, None], fields[:, None, :]] & np.isin(fields, PAIR_FIELDS)[:, None]
    ok[np.arange(B)[:, None], np.arange(queries.shape[1])[None], queries] = False  # itself
    jb, jn = np.nonzero(LINE_BACK[qf] > 0)  # a line's number: its line's code only
    ok[jb, jn] = False
    ok[jb, jn, (queries - LINE_BACK[qf])[jb, jn]] = True
    ok = torch.as_tensor(ok, device=a.device)[:, :, None, None, :]
    flat = specific.masked_fill(~ok, float("-inf")).reshape(B, queries.shape[1], -1)
    top, best = flat.max(dim=-1)  # (B, k) over (L, H, T)
    layer, head, key = np.unravel_index(best.cpu().numpy(), (L, H, T))
    weight = edges.cpu().numpy()[np.arange(B)[:, None], np.arange(queries.shape[1])[None],
                                 layer, head, key]
    return layer, head, key, weight, torch.isfinite(top).cpu().numpy()


def field_importance(attribution: np.ndarray, fields: np.ndarray) -> list[dict[str, float]]:
    """Positive attribution (B, T) summed per field type (B, T), as shares that sum to 1
    (empty where nothing pushed the score up)."""
    B, T = fields.shape
    per = np.zeros((B, len(FIELDS)), dtype=np.float64)
    np.add.at(per, (np.repeat(np.arange(B), T), fields.ravel()),
              np.clip(attribution, 0, None).ravel())
    per[:, :2] = 0  # padding, [CLS]
    per /= np.maximum(per.sum(axis=1, keepdims=True), 1e-12)
    order = np.argsort(-per, axis=1).tolist()
    rows = per.round(4).tolist()  # Python floats: numpy scalars are slow one at a time
    return [{FIELDS[f]: row[f] for f in o if row[f] > 0} for row, o in zip(rows, order,
                                                                              strict=True)]


def describe(token: Token, vocab: Vocabulary) -> str:
    """A token's label with the code's meaning where the vocabulary knows it."""
    if token.field == "diagnosis" and token.label in vocab.diagnoses:
        return f"{token.label} {vocab.diagnoses[token.label].description}"
    if token.field == "procedure" and token.label in vocab.procedures:
        return f"{token.label} {vocab.procedures[token.label].description}"
    return token.label


REASONS = {
    "diagnosis": "diagnosis {t} does not fit the rest of the claim (read with {p})",
    "procedure": "procedure {t} is unusual with {p}",
    "drug": "drug {t} is unusual with {p}",
    "dose": "dose {t}",
    "proc_charge": "price {t} is out of line (read with {p})",
    "drug_price": "price {t} is out of line (read with {p})",
    "total": "{t} is out of line with the services billed",
    "units": "{t} is unusual for {p}",
    "days": "{t} is unusual for {p}",
    "specialty": "specialty {t} rarely bills {p}",
    "age": "member {t} does not fit {p}",
    "sex": "member {t} does not fit {p}",
    "place": "{t} is unusual for {p}",
    "edits": "the claim breaks {t}",
}


NOTHING_UNUSUAL = "nothing unusual: no channel fired"
AS_A_WHOLE = ("unusual as a whole: taking out any one of its least expected items does not "
              "lower the score")


def medical_cause(tokens: list[Token], t: Token, vocab: Vocabulary) -> str | None:
    """The cause in an investigator's words where the vocabulary can state it for the token
    that decided: a drug or procedure no diagnosis on the claim calls
    for, or a daily dose above the drug's maximum. None otherwise (the model's own reading
    then stands). Where the claim's diagnoses are unknown, no diagnosis is said to be
    missing."""
    dx = [x.parts[0] for x in tokens if x.field == "diagnosis" and x.parts]
    known = None not in dx
    if t.field == "drug" and t.parts and t.parts[0] in vocab.drugs:
        if known and t.parts[0] not in vocab.justified_drugs(dx):
            return f"{t.label}: no diagnosis on the claim is treated with it"
    elif t.field == "procedure" and t.parts and t.parts[0] in vocab.procedures:
        if known and t.parts[0] not in vocab.justified_procedures(dx):
            return f"procedure {describe(t, vocab)}: no diagnosis on the claim calls for it"
    elif (t.field == "dose" and t.parts and (d := vocab.drugs.get(t.parts[0])) is not None
          and t.parts[1] > (top := d.daily_max_mg)):
        return f"{d.name}: {mg(t.parts[1])} mg a day, above its {mg(top)} mg a day maximum"
    return None


def mg(x: float) -> str:
    """Milligrams as a person writes them: thousands separated, and a small dose to three
    significant figures (digoxin's 0.25 mg a day maximum, which whole numbers printed as
    0)."""
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def listed_together(t: Token, partner: Token, vocab: Vocabulary) -> str | None:
    """What our tables say joins `t` to its partner, where they list the pair as usual: a
    specialty that bills the procedure or prescribes the drug
    (`Vocabulary.prescribes`), a listed diagnosis whose area lists the procedure or drug, a
    member whose age or sex the partner's code is meant for (`Demographics`).
    A procedure every diagnosis allows (venipuncture, a urinalysis) is said to be; a visit
    is not: its level is bounded by the claim's diagnoses, so the model's reading stands.
    None otherwise, or where either side is unknown."""
    if not t.parts or not partner.parts or t.parts[0] is None or partner.parts[0] is None:
        return None
    code, other = t.parts[0], partner.parts[0]
    if t.field in ("age", "sex"):
        return meant_for(t.field, code, partner, vocab)
    if t.field == "specialty":
        spec = vocab.specialties.get(code)
        if ((partner.field == "procedure" and spec is not None and other in spec.procedures)
                or (partner.field == "drug" and vocab.prescribes(code, other))):
            return f"{other} is listed for {code}"
        return None
    # a listed diagnosis only: an unlisted one reads as its category's stand-in, whose
    # area, ages and sex need not be its own
    if partner.field != "diagnosis" or (dx := vocab.diagnoses.get(other)) is None:
        return None
    if t.field == "procedure" and code in vocab.general_procedures:
        q = vocab.procedures.get(code)
        return None if q is not None and q.em_level else "allowed with any diagnosis"
    area = vocab.areas[dx.area]  # the links are per clinical area: say so, not more
    if ((t.field == "procedure" and code in area.procedures)
            or (t.field == "drug" and code in area.drugs)):
        return f"listed for {other}'s area, {area.name}"
    return None


def meant_for(field: str, value: int | str, partner: Token, vocab: Vocabulary) -> str | None:
    """Where the partner's code (a diagnosis, procedure or drug) is meant for a member of
    this age or sex by our tables, what they say; else None (unknown sex included)."""
    code = partner.parts[0]
    item = (vocab.diagnoses.get(code) if partner.field == "diagnosis" else
            vocab.procedures.get(code) if partner.field == "procedure" else
            vocab.drugs.get(code) if partner.field == "drug" else None)
    if item is None:
        return None
    who = item.who
    if field == "age" and who.min_age <= int(value) <= who.max_age:
        return f"{code} is for ages {who.min_age}-{who.max_age}"
    if field == "sex" and value != "U" and who.sex in (None, value):
        return f"{code} is for {SEXES.get(who.sex or '', 'either sex')}"
    return None


SEXES = {"F": "women", "M": "men"}
WHO = {"age": "member", "sex": "member"}  # how a line names a token of this field


def reason(tokens: list[Token], top_idx: int, partner_idx: int | None,
           vocab: Vocabulary) -> str:
    """One line for a flagged claim: its top attributed token, read with its partner
    (None: it has none, and is read with the rest of the claim). Where our own tables
    list the two as going together, the line does not call the pair unusual (that would
    be false, and an investigator would catch it): the token is what does not fit the
    rest of the claim."""
    t = tokens[top_idx]
    if (cause := medical_cause(tokens, t, vocab)) is not None:
        return cause
    if partner_idx is None:
        return REASONS.get(t.field, "{t} is unusual").format(
            t=describe(t, vocab), p="the rest of the claim")
    partner = tokens[partner_idx]
    if t.field in WHO and t.parts[:1] in ((None,), ("U",)):
        # an age or sex the claim does not state contradicts no code: no partner to blame
        return REASONS[t.field].format(t=describe(t, vocab), p="the rest of the claim")
    if (usual := listed_together(t, partner, vocab)) is not None:
        return (f"{WHO.get(t.field, t.field)} {describe(t, vocab)} does not fit the rest of"
                f" the claim ({usual})")
    return REASONS.get(t.field, "{t} is unusual").format(t=describe(t, vocab),
                                                         p=describe(partner, vocab))
