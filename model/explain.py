"""Explanations from one forward pass: attention pairs, rollout importance, surprise.

All of it is computed for a whole batch (torch and numpy array work, no per-claim
model calls):

- **top pairs**: the strongest attention edges between two different content tokens over
  every layer and head ("E11.9 ↔ metformin 500 mg", layer 1, head 3, weight 0.62); for
  flagged claims (or every claim with `Scorer(explain="all")`), since decoding them costs
  a quarter of the scoring time;
- **field importance**: attention rollout (Abnar & Zuidema 2020) from [CLS] — average the
  heads, add the residual path (0.5 A + 0.5 I), multiply through the layers — summed per
  field type;
- **surprising tokens**: the tokens the replaced-token head finds least likely to belong,
  as -log p(belongs) in nats; the top one is the claim's *most explained* token, the one
  `claimscope eval` masks to test faithfulness;
- **reason**: one line built from the most surprising token, its field and the token it
  attends to most.
"""

from __future__ import annotations

import numpy as np
import torch

from model.tokenizer import FIELD_ID, FIELDS, Token
from model.vocabulary import Vocabulary

N_PAIRS = 3
N_SURPRISING = 3
PAIR_FIELDS = [FIELD_ID[f] for f in FIELDS if f not in ("pad", "cls", "units", "days")]
# Whom a reason reads the surprising token against: a drug against the diagnoses, a
# diagnosis against the treatments, a price or a unit count against the line's code...
_PARTNERS = {"diagnosis": ("procedure", "drug"), "procedure": ("diagnosis",),
             "drug": ("diagnosis",), "specialty": ("procedure", "drug"),
             "age": ("diagnosis", "procedure", "drug"), "sex": ("diagnosis", "procedure", "drug")}
PARTNER = np.zeros((len(FIELDS), len(FIELDS)), dtype=bool)  # [surprising field, partner field]
for _f in FIELDS[2:]:
    for _p in _PARTNERS.get(_f, ("procedure", "drug")):
        PARTNER[FIELD_ID[_f], FIELD_ID[_p]] = True


def rollout(attentions: list[torch.Tensor]) -> np.ndarray:
    """(B, T) share of [CLS]'s final representation that flows from each token."""
    B, _, T, _ = attentions[0].shape
    eye = torch.eye(T, device=attentions[0].device)
    r = eye.expand(B, T, T)
    for a in attentions:  # (B, nh, T, T)
        m = 0.5 * a.float().mean(dim=1) + 0.5 * eye
        m = m / m.sum(dim=-1, keepdim=True)
        r = m @ r
    return r[:, 0, :].cpu().numpy()


def top_pairs(attentions: list[torch.Tensor], fields: np.ndarray, k: int = 4 * N_PAIRS
              ) -> list[list[tuple[int, int, int, int, float]]]:
    """Per claim, up to k (layer, head, query, key, weight) edges between two tokens that
    mean something on their own (not [CLS], padding, unit counts or days supply).

    Ranked by *specific* attention: the weight minus the mean weight the key gets from
    all tokens in that head. Some heads park most of their attention on one token (an
    attention sink, here often the claim total); raw weights would list those edges first
    and say nothing about how two tokens relate. The reported weight is the raw one.
    """
    a = torch.stack(attentions, dim=1).float().cpu().numpy()  # (B, L, nh, T, T), a copy
    B, L, H, T, _ = a.shape
    keep = np.isin(fields, PAIR_FIELDS)  # (B, T)
    valid = keep[:, None, None, :, None] & keep[:, None, None, None, :]
    received = (a * keep[:, None, None, :, None]).sum(axis=3, keepdims=True) / np.maximum(
        keep.sum(axis=1), 1)[:, None, None, None, None]  # (B, L, nh, 1, T)
    specific = np.where(valid, a - received, -np.inf)
    idx = np.arange(T)
    specific[..., idx, idx] = -np.inf  # a token attending to itself says nothing
    flat, raw = specific.reshape(B, -1), a.reshape(B, -1)
    k = min(k, flat.shape[1])
    best = np.argpartition(-flat, k - 1, axis=1)[:, :k]
    out = []
    for b in range(B):
        order = best[b][np.argsort(-flat[b, best[b]])]
        lay, h, q, key = np.unravel_index(order, (L, H, T, T))
        out.append([(int(lay[i]), int(h[i]), int(q[i]), int(key[i]), float(raw[b, order[i]]))
                    for i in range(k) if flat[b, order[i]] > 0])
    return out


def field_importance(importance: np.ndarray, fields: np.ndarray) -> list[dict[str, float]]:
    """Sum token importance per field type (excluding [CLS]); each dict sums to 1."""
    B, T = fields.shape
    per = np.zeros((B, len(FIELDS)), dtype=np.float64)
    np.add.at(per, (np.repeat(np.arange(B), T - 1), fields[:, 1:].ravel()),
              importance[:, 1:].ravel())
    per[:, 0] = 0  # padding
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
}


NOTHING_UNUSUAL = "nothing unusual: no channel fired"


def medical_cause(tokens: list[Token], t: Token, vocab: Vocabulary) -> str | None:
    """The cause in an investigator's words where the vocabulary can state it for the token
    the model found most surprising: a drug or procedure no diagnosis on the claim calls
    for, or a daily dose above the drug's maximum. None otherwise (the model's own reading
    then stands)."""
    dx = [x.parts[0] for x in tokens if x.field == "diagnosis" and x.parts]
    if t.field == "drug" and t.parts and t.parts[0] in vocab.drugs:
        if t.parts[0] not in vocab.justified_drugs(dx):
            return f"{t.label}: no diagnosis on the claim is treated with it"
    elif t.field == "procedure" and t.parts and t.parts[0] in vocab.procedures:
        if t.parts[0] not in vocab.justified_procedures(dx):
            return f"procedure {describe(t, vocab)}: no diagnosis on the claim calls for it"
    elif t.field == "dose" and t.parts and (d := vocab.drugs.get(t.parts[0])) is not None:
        top = d.strength_max_mg * d.doses_per_day
        if t.parts[1] > top:
            return (f"{d.name}: {t.parts[1]:,.0f} mg a day, above its {top:,.0f} mg a day "
                    f"maximum")
    return None


def reason(tokens: list[Token], surprise_idx: int, partner_idx: int, vocab: Vocabulary,
           flagged: bool) -> str:
    """One line: the most surprising token, read with the token it attends to most; for a
    claim nothing flagged, only that (naming its least expected token would read as an
    accusation the score does not make)."""
    t = tokens[surprise_idx]
    if not flagged:
        return NOTHING_UNUSUAL
    if (cause := medical_cause(tokens, t, vocab)) is not None:
        return cause
    return REASONS.get(t.field, "{t} is unusual").format(
        t=describe(t, vocab), p=describe(tokens[partner_idx], vocab))
