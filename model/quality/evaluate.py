"""`claimscope eval`: the yardstick. Every method on the same fresh claims, with intervals.

Protocol (docs/model.md says why each choice):

- **Test set**: `count` (100,000 by default) fresh claims from `seed`, which must not be one of
  the checkpoint's training seeds; the whole stream in order, so the cross-claim checks see
  it as a worker would.
- **Methods**, all scored on those claims with the same cross-claim checks combined by the
  same rule (`score = 1 - (1 - s) x prod(1 - p_check)`), and with the same training budget:
  the baselines learn from claims generated exactly as the checkpoint's were (its training
  seed, count, fraud mix and patterns; its unlabelled stream for what needs no labels):
  `claimformer`; `pair_gbdt` (co-occurrence support learned from the unlabelled stream,
  `model.quality.baselines.PairSupport`); `flat_gbdt` (one-hot codes and ratios); `isolation_forest`
  (unlabelled); `rule_oracle` (the vocabulary's own rules, `model.rules`: the ceiling, not a
  competitor).
- **Metrics**: AUROC, PR-AUC, recall at 1% false positives, each with a 95% bootstrap
  interval (`bootstrap` resamples of the test claims), and per pattern (each against the
  clean claims; both mismatch variants too). `single_claim` repeats them without the
  cross-claim patterns and without the checks.
- **Cross-claim checks**: each check's recall on its pattern and false-positive rate on
  clean claims, overall and for members in frequent legitimate care, with the limits the
  checkpoint learned from history (`checks`) and with the flat defaults (`checks_flat`).
- **Probes** (`model.quality.probe`) on the same claims: the artefact probe (shapes), the
  identity probe (a linear model over the bag of codes and the specialty), and the codes
  that fraud claims carry and clean ones never do.
- **Invariance**: the share of decisions that change when each claim's diagnoses and lines
  are shuffled; the false-positive rate on clean claims whose listed diagnoses are swapped
  for unlisted ICD-10-CM siblings, next to the same claims' rate as they were; and on clean
  claims carrying codes the checkpoint's training held out (`heldout_codes`), per field,
  next to clean claims carrying none.
- **Everyday care** (`model.quality.everyday`): hand-written common encounters, their
  clean flag rate and three mutations' AUROC and explanations.
- **Explanations** (ERASER, DeYoung et al. 2020), on claims the model flags by itself,
  for the tokens the Score names (the deciding channel's attribution, `model.explain`):
  comprehensiveness (score drop when the explanation's top-k tokens are resampled) and
  sufficiency (score drop when every other token is) at k = 1, 3, 5, against random tokens.
  A token is removed by resampling an in-range value of its field (drawn from the clean
  claims' values), not by padding. Top-3 hit on every fraud claim of the mismatch patterns,
  with its chance level.
- **Heads**: the AUROC change per pattern with each head zeroed, next to its specialisation.
- **Novelty** (`novelty`): for each pattern, a model trained without any claim of it; the
  anomaly channel's AUROC on it and recall at a 1% false-positive budget.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from model import explain
from model.checks import CheckLimits, CrossClaimChecks, MemoryState
from model.claims import Claim
from model.codes import range_span
from model.edits import PayerEdits
from model.generator import (
    CLEAN,
    CROSS_CLAIM_PATTERNS,
    PATTERNS,
    SINGLE_CLAIM_PATTERNS,
    ClaimGenerator,
    unlisted_siblings,
)
from model.metrics import auroc, pr_auc
from model.parity import Parity, parity
from model.quality.baselines import (
    FlatEncoder,
    PairSupport,
    gradient_boosting_scores,
    isolation_forest_scores,
)
from model.quality.everyday import everyday
from model.quality.probe import artefact_probe, fraud_only_codes, identity_probe
from model.quality.results import (
    AnomalyFigures,
    CheckFigures,
    CheckReport,
    EditsReport,
    EvalResult,
    Explanations,
    Figures,
    Flagged,
    HeadAblation,
    HeldoutFigures,
    Interval,
    Invariance,
    MethodFigures,
    NoveltyFigures,
    PatternFigures,
    Probes,
    SwapFigures,
    Throughput,
    WayFigures,
)
from model.rules import rule_oracle_scores
from model.score import EDIT_CHANNELS
from model.scorer import Scorer
from model.tokenizer import FIELD_ID, MAX_TOKENS
from model.training import TrainConfig, heldout_set, train
from model.vocabulary import default_vocabulary

METHODS = ("claimformer", "pair_gbdt", "flat_gbdt", "isolation_forest", "rule_oracle")
MISMATCH_PATTERNS = ("diagnosis_treatment_mismatch", "specialty_mismatch")
CHECK_PATTERNS = {"duplicate_billing": "duplicate_billing",
                  "member_velocity": "high_velocity_member"}  # check -> the pattern it finds
KS = (1, 3, 5)  # at most explain.N_CANDIDATES: the tokens an explanation ranks
ERASER_CLAIMS = 2000  # flagged claims the explanation figures are measured on
ABLATION_CLAIMS = 10_000  # claims of the test set each head ablation is measured on


class EvalError(ValueError):
    """An evaluation that would not be fair (a training seed as test seed): one line."""


@dataclass
class Stream:
    """Labelled claims: wire form (dicts), validated, pattern and variant per claim."""

    wire: list[dict]
    claims: list[Claim]
    patterns: np.ndarray  # (N,) str
    variants: np.ndarray  # (N,) str, "" unless a mismatch claim
    series: np.ndarray  # (N,) bool: the member is in frequent care (generator.SERIES)

    @property
    def labels(self) -> np.ndarray:
        return (self.patterns != CLEAN).astype(int)

    def keys(self) -> np.ndarray:
        """Pattern, with the mismatch variant spelled out (`...:drug`)."""
        return np.array([f"{p}:{v}" if v else p for p, v in zip(self.patterns, self.variants,
                                                                strict=True)])


def make_stream(count: int, seed: int, fraud_rate: float, patterns: Sequence[str] = PATTERNS,
                heldout: frozenset[str] = frozenset()) -> Stream:
    gen = ClaimGenerator(seed=seed, fraud_rate=fraud_rate, patterns=tuple(patterns), size=count,
                         heldout=heldout)
    items = list(gen.generate(count))
    wire = [x.claim for x in items]
    return Stream(wire, [Claim.model_validate(c) for c in wire],
                  np.array([x.fraud_pattern for x in items]),
                  np.array([x.variant or "" for x in items]),
                  np.array([c["member_id"] in gen.plans for c in wire]))


# -- metrics (AUROC and PR-AUC: model.metrics) ---------------------------------------------
def recall_at_fpr(y: np.ndarray, s: np.ndarray, fpr: float = 0.01) -> float:
    """Recall at the cut that leaves `fpr` of the negatives above it."""
    neg, pos = s[y == 0], s[y == 1]
    if not len(neg) or not len(pos):
        return float("nan")
    return float((pos > np.quantile(neg, 1 - fpr)).mean())


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "auroc": auroc, "pr_auc": pr_auc, "recall_at_1pct_fpr": recall_at_fpr}


def with_interval(fn: Callable, y: np.ndarray, s: np.ndarray, resamples: list[np.ndarray]
                  ) -> Interval:
    """The value and [lo, hi]: percentile bootstrap over the resamples."""
    boots = np.array([fn(y[idx], s[idx]) for idx in resamples])
    boots = boots[~np.isnan(boots)]
    lo, hi = (np.percentile(boots, [2.5, 97.5]) if len(boots) else (np.nan, np.nan))
    return Interval(round(fn(y, s), 4), [round(float(lo), 4), round(float(hi), 4)])


def method_metrics(keys: np.ndarray, y: np.ndarray, s: np.ndarray, rng: np.random.Generator,
                   bootstrap: int) -> MethodFigures:
    """Headline metrics with intervals, and per pattern (AUROC and recall against clean)."""
    n = len(y)
    resamples = [rng.integers(0, n, n) for _ in range(bootstrap)]
    out = {name: with_interval(fn, y, s, resamples) for name, fn in METRICS.items()}
    clean = keys == CLEAN
    per = {}
    patterns = sorted({k.split(":")[0] for k in keys if k != CLEAN} | set(
        k for k in keys if ":" in k))
    for p in patterns:
        mine = np.char.startswith(keys.astype(str), p) if ":" not in p else keys == p
        idx = np.flatnonzero(mine | clean)
        yy, ss = mine[idx].astype(int), s[idx]
        sub = [rng.integers(0, len(idx), len(idx)) for _ in range(max(20, bootstrap // 4))]
        a = with_interval(auroc, yy, ss, sub)
        r = with_interval(recall_at_fpr, yy, ss, sub)
        per[p] = PatternFigures(int(mine.sum()), a.value, a.ci95, r.value, r.ci95)
    return MethodFigures(**out, per_pattern=per)


def plain_metrics(y: np.ndarray, s: np.ndarray) -> Figures:
    return Figures(**{name: round(fn(y, s), 4) for name, fn in METRICS.items()})


# -- model outputs ------------------------------------------------------------------------
def encode(scorer: Scorer, claims: Sequence[Claim]) -> tuple[np.ndarray, np.ndarray]:
    """(values, fields) padded to MAX_TOKENS, for any number of claims."""
    values = np.zeros((len(claims), MAX_TOKENS), dtype=np.int64)
    fields = np.zeros_like(values)
    for s in range(0, len(claims), 4096):
        enc = scorer.tokenizer.encode(list(claims[s:s + 4096]))
        values[s:s + len(enc.values), :enc.values.shape[1]] = enc.values
        fields[s:s + len(enc.values), :enc.fields.shape[1]] = enc.fields
    return values, fields


def model_scores(scorer: Scorer, values: np.ndarray, fields: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(combined score without checks, the anomaly channel's logit) from one pass."""
    raw = scorer.raw(values, fields, attention=False)
    _, _, combined = scorer.combine(raw)
    return combined, raw.anomaly_logit


def path_parity(scorer: Scorer, values: np.ndarray, fields: np.ndarray, combined: np.ndarray,
                anomaly: np.ndarray) -> Parity | None:
    """The model's decisions on the yardstick (without the checks) on this scorer's path
    (bf16, int8) against fp32 eager from the same checkpoint; None for a checkpoint held
    only in memory (nothing to load the reference from)."""
    flagged = (combined >= scorer.threshold) | scorer.anomalous(anomaly)
    if scorer.precision == "fp32":
        return parity("fp32", combined, flagged, combined, flagged)
    if scorer.ck.path is None:
        return None
    ref = Scorer.load(str(scorer.ck.path), device=str(scorer.device), precision="fp32",
                      threshold=scorer.threshold, anomaly_fpr=scorer.anomaly_fpr)
    c, a = model_scores(ref, values, fields)
    return parity(scorer.precision, c, (c >= ref.threshold) | ref.anomalous(a),
                  combined, flagged)


def cross_claim(claims: Sequence[Claim], limits: CheckLimits
                ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per claim, prod(1 - p) of the cross-claim checks that fired over the stream in order,
    and per check the claims it fired on."""
    checks = CrossClaimChecks(MemoryState(), limits)
    keep = np.ones(len(claims))
    fired = {name: np.zeros(len(claims), bool) for name in CHECK_PATTERNS}
    for s in range(0, len(claims), 1000):
        for i, hits in enumerate(checks.run(claims[s:s + 1000]), s):
            keep[i] = math.prod(1 - h.probability for h in hits)
            for h in hits:
                fired[h.name][i] = True
    return keep, fired


def anomaly_report(test: Stream, odd: np.ndarray, scored: np.ndarray, scorer: Scorer
                   ) -> AnomalyFigures:
    """The anomaly channel on its own: its false-positive rate on clean claims against its
    budget, its recall per pattern, and the fraud only it flags."""
    clean, fraud = test.patterns == CLEAN, test.patterns != CLEAN
    return AnomalyFigures(
        fpr_budget=scorer.anomaly_fpr, cut=scorer.anomaly_cut,
        clean_fpr=round(float(odd[clean].mean()), 5), recall=round(float(odd[fraud].mean()), 4),
        fraud_only_it_flags=int((odd & ~scored & fraud).sum()),
        per_pattern={p: round(float(odd[test.patterns == p].mean()), 4)
                     for p in sorted(set(test.patterns[fraud]))})


def way(test: Stream, flagged: np.ndarray) -> WayFigures:
    """One way of flagging against the labels: overall, and per pattern against the clean
    claims (recall on the pattern's claims; precision among the pattern's and the clean
    claims it flags)."""
    clean, fraud = test.patterns == CLEAN, test.patterns != CLEAN

    def precision(of: np.ndarray, among: np.ndarray) -> float:
        hit = flagged & among
        return round(float(of[hit].mean()), 4) if hit.any() else float("nan")

    patterns = sorted(set(test.patterns[fraud]))
    return WayFigures(
        precision=precision(fraud, np.ones_like(flagged)),
        recall=round(float(flagged[fraud].mean()), 4),
        clean_fpr=round(float(flagged[clean].mean()), 5),
        per_pattern={p: round(float(flagged[test.patterns == p].mean()), 4) for p in patterns},
        per_pattern_precision={p: precision(test.patterns == p, (test.patterns == p) | clean)
                               for p in patterns})


def edits_report(test: Stream, model_flags: np.ndarray) -> EditsReport:
    """The payer edits over the stream in its order (per-day MUEs across claims in memory),
    alone, beside the model, and together."""
    hits = PayerEdits(MemoryState()).run(test.claims)
    by_edits = np.array([bool(h) for h in hits])
    clean = test.patterns == CLEAN
    fired = {e: np.array([any(x.edit == e for x in h) for h in hits]) for e in EDIT_CHANNELS}
    return EditsReport(edits=way(test, by_edits), model=way(test, model_flags),
                       either=way(test, by_edits | model_flags),
                       fired={e: int(f.sum()) for e, f in fired.items()},
                       fired_clean={e: int(f[clean].sum()) for e, f in fired.items()})


def check_report(test: Stream, fired: dict[str, np.ndarray], limits: CheckLimits
                 ) -> CheckReport:
    """Each check's recall on its pattern and false-positive rate on clean claims: all of
    them, and those of members in frequent care (dialysis, therapy, chemotherapy,
    psychotherapy), the care a flat limit calls fraud."""
    clean = test.patterns == CLEAN
    out = {}
    for name, pattern in CHECK_PATTERNS.items():
        hit = fired[name]
        out[name] = CheckFigures(recall=round(float(hit[test.patterns == pattern].mean()), 4),
                                 clean_fpr=round(float(hit[clean].mean()), 5),
                                 frequent_care_fpr=round(float(hit[clean & test.series].mean()),
                                                         5),
                                 frequent_care_claims=int((clean & test.series).sum()))
    return CheckReport(limits, out)


def to_unit(s: np.ndarray) -> np.ndarray:
    """A score as a probability-like value in [0, 1] by rank (monotone: same AUROC)."""
    return (rankdata(s) - 0.5) / len(s)


# -- the parts ----------------------------------------------------------------------------
def baselines(scorer: Scorer, test: Stream, log: Callable[[str], None]) -> dict[str, np.ndarray]:
    """Scores of every baseline on the test claims, trained with the checkpoint's budget."""
    t = scorer.ck.training
    seed, count = t.get("seed", 1234), t.get("train_count", 60_000)
    patterns = t.get("patterns", list(SINGLE_CLAIM_PATTERNS))
    log(f"baselines: {count:,} labelled (seed {seed}, fraud {t.get('fraud_rate', 0.25)}) and "
        f"{count:,} unlabelled (seed {seed + 1}) training claims, as the checkpoint had")
    out = heldout_set(t)
    labelled = make_stream(count, seed, t.get("fraud_rate", 0.25), patterns, out)
    unlabelled = make_stream(count, seed + 1, 0.05, patterns, out)
    v = default_vocabulary()
    flat = FlatEncoder(v)
    fx_train, fx_test = flat.encode(labelled.claims), flat.encode(test.claims)
    pairs = PairSupport(v).fit(unlabelled.claims)
    log("baselines: fitting")
    return {
        "pair_gbdt": gradient_boosting_scores(pairs.encode(labelled.claims), labelled.labels,
                                              pairs.encode(test.claims), seed),
        "flat_gbdt": gradient_boosting_scores(fx_train, labelled.labels, fx_test, seed),
        "isolation_forest": to_unit(isolation_forest_scores(flat.encode(unlabelled.claims),
                                                            fx_test, seed)),
        "rule_oracle": rule_oracle_scores(test.wire, v) / 7,
    }


def shuffled(c: dict, rng: np.random.Generator) -> dict:
    """The claim with its diagnoses and lines in another order."""
    out = dict(c)
    for k in ("diagnoses", "procedures", "medications"):
        out[k] = [c[k][i] for i in rng.permutation(len(c[k]))]
    return out


def with_siblings(c: dict, rng: np.random.Generator) -> tuple[dict, int]:
    """The claim with each listed diagnosis swapped for an unlisted sibling where one reads
    the same (`Vocabulary.sibling_reads_alike`: one-area category, same limits, as the
    generator's own siblings); how many were swapped. A shared area alone is not enough:
    in a category of several areas (Z13 screenings) a sibling reads as another area's
    code (docs/model-history.md)."""
    v = default_vocabulary()
    listed = frozenset(v.diagnoses)
    out, swapped = [], 0
    for code in c["diagnoses"]:
        siblings = unlisted_siblings(code[:3], listed) if v.sibling_reads_alike(code) else ()
        pick = siblings[rng.integers(len(siblings))] if siblings else code
        swapped += pick != code
        out.append(pick)
    return {**c, "diagnoses": list(dict.fromkeys(out))}, swapped


def with_unlisted_procedures(c: dict, rng: np.random.Generator) -> tuple[dict, int]:
    """The claim with each listed procedure code swapped for a code of the same CPT/HCPCS
    range that the list lacks (`model.codes.range_span`), its units and charge kept; how
    many were swapped. What a real insurer's claims are full of: the list has ~500 codes."""
    listed = default_vocabulary().procedures
    lines, swapped = [], 0
    for line in c["procedures"]:
        code, span = line["code"], range_span(line["code"])
        if code in listed and span:
            prefix, first, last = span
            for n in rng.integers(first, last + 1, 20):
                if (other := f"{prefix}{n:0{5 - len(prefix)}d}") not in listed:
                    code, swapped = other, swapped + 1
                    break
        lines.append({**line, "code": code})
    return {**c, "procedures": lines}, swapped


def invariance(scorer: Scorer, test: Stream, rng: np.random.Generator, n: int = 10_000
               ) -> Invariance:
    """Decisions that move when nothing that matters does: the fraud model's under a
    shuffle of the claim's diagnoses and lines; and on clean claims, the model's flags
    (fraud model or anomaly channel) with their listed codes swapped for unlisted ones of
    the same family, next to the same claims' flags as they were."""
    thr = scorer.threshold

    def flags(claims: Sequence[Claim]) -> tuple[np.ndarray, np.ndarray]:
        combined, anomaly = model_scores(scorer, *encode(scorer, claims))
        return combined >= thr, scorer.anomalous(anomaly)

    idx = rng.choice(len(test.wire), min(n, len(test.wire)), replace=False)
    base, _ = flags([test.claims[i] for i in idx])
    moved, _ = flags([Claim.model_validate(shuffled(test.wire[i], rng)) for i in idx])
    swaps = {}
    v = default_vocabulary()
    clean = [i for i in np.flatnonzero(test.patterns == CLEAN)[:n]
             if all(d in v.diagnoses for d in test.wire[i]["diagnoses"])]
    for name, swap in (("oov_sibling", with_siblings), ("unlisted_procedure",
                                                       with_unlisted_procedures)):
        swapped = [swap(test.wire[i], rng) for i in clean]
        keep = [k for k, (_, s) in enumerate(swapped) if s]  # claims with a code to swap
        before = flags([test.claims[clean[k]] for k in keep])
        after = flags([Claim.model_validate(swapped[k][0]) for k in keep])
        swaps[name] = SwapFigures(listed_fpr=round(float((before[0] | before[1]).mean()), 4),
                                  fpr=round(float((after[0] | after[1]).mean()), 4),
                                  anomaly_fpr=round(float(after[1].mean()), 4),
                                  claims=len(keep),
                                  codes_swapped=int(sum(swapped[k][1] for k in keep)))
    return Invariance(permutation_flag_rate_change=round(float((base != moved).mean()), 4),
                      permutation_flag_rate_delta=round(float(abs(base.mean() - moved.mean())),
                                                        4),
                      permutation_claims=len(idx), **swaps)


CODES_OF = {"diagnosis": lambda c: c["diagnoses"],
            "procedure": lambda c: [p["code"] for p in c["procedures"]],
            "drug": lambda c: [m["name"] for m in c["medications"]]}


def heldout_report(test: Stream, flagged: np.ndarray, heldout: dict[str, list[str]]
                   ) -> HeldoutFigures:
    """Clean claims flagged by any channel: those that carry no code the checkpoint's
    training held out (`seen_code_fpr`), and per field those that carry one of that field
    (`heldout_code_fpr`), with their counts. Codes never seen must be no evidence."""
    clean = np.flatnonzero(test.patterns == CLEAN)
    held = {f: frozenset(heldout.get(f, ())) for f in CODES_OF}
    carries = {f: np.array([bool(held[f].intersection(CODES_OF[f](test.wire[i])))
                            for i in clean], dtype=bool) for f in CODES_OF}
    seen = ~np.any(list(carries.values()), axis=0)
    rate = lambda m: round(float(flagged[clean][m].mean()), 5) if m.any() else None  # noqa: E731
    return HeldoutFigures(seen_code_fpr=rate(seen), seen_code_claims=int(seen.sum()),
                          heldout_code_fpr={f: rate(m) for f, m in carries.items()},
                          heldout_code_claims={f: int(m.sum()) for f, m in carries.items()},
                          heldout_codes={f: len(codes) for f, codes in held.items()})


def injected_values(scorer: Scorer, test: Stream, i: int) -> set[int]:
    """Token ids the vocabulary's links say do not belong on mismatch claim `i`."""
    v, tok, c = scorer.vocab, scorer.tokenizer, test.claims[i]
    ok_p, ok_d = v.justified_procedures(c.diagnoses), v.justified_drugs(c.diagnoses)
    spec = v.specialties.get(c.provider_specialty)
    out = set()
    if test.patterns[i] == "diagnosis_treatment_mismatch":
        out |= {tok.index[f"proc:{p.code}"] for p in c.procedures
                if p.code not in ok_p and f"proc:{p.code}" in tok.index}
        out |= {tok.index[f"drug:{m.name}"] for m in c.medications
                if m.name not in ok_d and f"drug:{m.name}" in tok.index}
    elif spec is not None:  # specialty mismatch: the specialty, or the code it doesn't do
        out.add(tok.index[f"spec:{spec.id}"])
        out |= {tok.index[f"proc:{p.code}"] for p in c.procedures
                if p.code not in spec.procedures and f"proc:{p.code}" in tok.index}
    return out


def field_pools(values: np.ndarray, fields: np.ndarray) -> dict[int, np.ndarray]:
    """Per field id, the token values clean claims use: what a resampled token is drawn from."""
    return {f: np.unique(values[fields == f]) for f in np.unique(fields) if f > 1}


def resample(values: np.ndarray, fields: np.ndarray, mask: np.ndarray,
             pools: dict[int, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """`values` with every masked token replaced by a random in-range value of its field."""
    out = values.copy()
    for r, t in zip(*np.nonzero(mask), strict=True):
        pool = pools.get(int(fields[r, t]))
        if pool is not None and len(pool):
            out[r, t] = pool[rng.integers(len(pool))]
    return out


def explanations(scorer: Scorer, test: Stream, values: np.ndarray, fields: np.ndarray,
                 base: np.ndarray, anomaly: np.ndarray, rng: np.random.Generator
                 ) -> Explanations:
    """ERASER comprehensiveness/sufficiency and the top-3 hit rate (module docstring), for
    the tokens the Score names: those with the largest attribution of the deciding
    channel's logit (`Scorer.attribute`)."""
    content = (values != 0) & (fields != FIELD_ID["cls"])
    pools = field_pools(values[test.patterns == CLEAN], fields[test.patterns == CLEAN])
    fired = base >= scorer.threshold
    odd = scorer.anomalous(anomaly)
    own = np.flatnonzero((fired | odd) & np.isin(test.patterns, SINGLE_CLAIM_PATTERNS))
    own = rng.choice(own, min(ERASER_CLAIMS, len(own)), replace=False) if len(own) else own
    mism = np.flatnonzero(np.isin(test.patterns, MISMATCH_PATTERNS))
    rows = np.union1d(own, mism)
    order = np.zeros((len(values), explain.N_CANDIDATES), dtype=int)  # ranked, on `rows`
    if len(rows):
        v, f = values[rows], fields[rows]
        order[rows], _, _ = scorer.attribute(v, f, scorer.raw(v, f), odd[rows] & ~fired[rows])
    out: dict[str, dict[str, float]] = {
        name: {} for name in ("comprehensiveness", "sufficiency", "random_comprehensiveness",
                              "random_sufficiency")}
    if len(own):
        v, f, s0 = values[own], fields[own], base[own]
        cont = content[own]
        rand_rank = np.where(cont, rng.random(cont.shape), -np.inf)
        rand_order = np.argsort(-rand_rank, axis=1)
        for k in KS:
            for prefix, ordr in (("", order[own]), ("random_", rand_order)):
                top = np.zeros_like(cont)
                np.put_along_axis(top, ordr[:, :k], True, axis=1)
                top &= cont
                without, _ = model_scores(scorer, resample(v, f, top, pools, rng), f)
                only, _ = model_scores(scorer, resample(v, f, cont & ~top, pools, rng), f)
                out[prefix + "comprehensiveness"][f"k{k}"] = round(float((s0 - without).mean()),
                                                                   4)
                out[prefix + "sufficiency"][f"k{k}"] = round(float((s0 - only).mean()), 4)
    hits, chance = [], []
    for i in mism:
        bad = injected_values(scorer, test, i)
        n = int(content[i].sum())
        m = sum(1 for t in range(MAX_TOKENS) if content[i, t] and values[i, t] in bad)
        if not m:
            continue  # the injected item was cut off by truncation or is out of vocabulary
        hits.append(bool(set(values[i, order[i, :3]]) & bad))
        chance.append(1 - math.comb(n - m, 3) / math.comb(n, 3) if n >= 3 else 1.0)
    return Explanations(
        claims=len(own), **out,
        top3_hit=round(float(np.mean(hits)), 4) if hits else None,
        top3_chance=round(float(np.mean(chance)), 4) if chance else None,
        top3_claims=len(hits),
        ranking="leave-one-out fall of the deciding channel's logit, as the Score's top_tokens")


def heads(scorer: Scorer, test: Stream, values: np.ndarray, fields: np.ndarray,
          rng: np.random.Generator) -> dict[str, HeadAblation]:
    """AUROC change per single-claim pattern with each head zeroed, and its specialisation."""
    idx = rng.choice(len(values), min(ABLATION_CLAIMS, len(values)), replace=False)
    v, f, pats = values[idx], fields[idx], test.patterns[idx]
    full, _ = model_scores(scorer, v, f)
    spec = {}
    snaps = scorer.ck.metrics.get("snapshots") or []
    if snaps:
        spec = {(h["layer"], h["head"]): h["specialisation"] for h in snaps[-1]["heads"]}
    cfg = scorer.model.cfg
    out = {}
    for layer in range(cfg.n_layers):
        for head in range(cfg.n_heads):
            with scorer.model.ablate_head(layer, head):
                ablated, _ = model_scores(scorer, v, f)
            change = {}
            for p in SINGLE_CLAIM_PATTERNS:
                mask = (pats == p) | (pats == CLEAN)
                y = (pats[mask] == p).astype(int)
                change[p] = round(auroc(y, ablated[mask]) - auroc(y, full[mask]), 4)
            out[f"L{layer}H{head}"] = HeadAblation(change, spec.get((layer, head)))
    return out


def evaluate(scorer: Scorer, count: int = 100_000, seed: int = 11, fraud_rate: float = 0.05,
             bootstrap: int = 200, log: Callable[[str], None] = print) -> EvalResult:
    """The whole yardstick (module docstring) for one checkpoint."""
    started, times = time.monotonic(), {}
    train_seed = scorer.ck.training.get("seed")
    if train_seed is not None and train_seed <= seed <= train_seed + 3:
        raise EvalError(f"seed {seed} is one of the checkpoint's training seeds "
                        f"({train_seed}-{train_seed + 3}): pick another")
    rng = np.random.default_rng(seed)

    def lap(name: str) -> None:
        times[name] = round(time.monotonic() - started - sum(times.values()), 1)

    log(f"generating {count:,} test claims (seed {seed}, fraud rate {fraud_rate})")
    test = make_stream(count, seed, fraud_rate)
    keys, y = test.keys(), test.labels
    lap("generate")
    log("checks and the model")
    keep, fired = cross_claim(test.claims, scorer.ck.check_limits)
    values, fields = encode(scorer, test.claims)
    model, anomaly = model_scores(scorer, values, fields)
    log(f"parity of the {scorer.precision} path against fp32 eager")
    same = path_parity(scorer, values, fields, model, anomaly)
    lap("model")
    raw = {"claimformer": model, **baselines(scorer, test, log)}
    lap("baselines")
    log("metrics with intervals")
    single = ~np.isin(test.patterns, CROSS_CLAIM_PATTERNS)
    methods, single_claim = {}, {}
    for name, s in raw.items():
        methods[name] = method_metrics(keys, y, 1 - (1 - s) * keep, rng, bootstrap)
        single_claim[name] = plain_metrics(y[single], s[single])
    lap("metrics")
    log("artefact probe, invariance, explanations, heads")
    final = 1 - (1 - model) * keep
    odd = scorer.anomalous(anomaly)
    flagged = (final >= scorer.threshold) | odd
    flags = Flagged(precision=round(float(y[flagged].mean()), 4),
                    recall=round(float(flagged[y == 1].mean()), 4),
                    clean_fpr=round(float(flagged[y == 0].mean()), 5))
    anomaly_channel = anomaly_report(test, odd, final >= scorer.threshold, scorer)
    checks = check_report(test, fired, scorer.ck.check_limits)
    checks_flat = check_report(test, cross_claim(test.claims, CheckLimits())[1], CheckLimits())
    edits = edits_report(test, (model >= scorer.threshold) | odd)
    probes = Probes(
        artefact=artefact_probe(test.wire, test.patterns, seed),
        artefact_all_clean=artefact_probe(test.wire, test.patterns, seed, eligible=False),
        identity=identity_probe(test.wire, test.patterns),
        fraud_only_codes=fraud_only_codes(test.wire, test.patterns))
    lap("probe")
    care = everyday(scorer, seed=seed, log=log)
    lap("everyday")
    moved = invariance(scorer, test, rng)
    held = heldout_report(test, flagged, scorer.ck.training.get("heldout") or {})
    lap("invariance")
    named = explanations(scorer, test, values, fields, model, anomaly, rng)
    lap("explanations")
    ablated = heads(scorer, test, values, fields, rng)
    lap("heads")
    speed = throughput(scorer, test.claims)
    lap("throughput")
    return EvalResult(
        count=count, seed=seed, fraud_rate=fraud_rate, model_version=scorer.model_version,
        threshold=scorer.threshold,
        chance=Figures(auroc=0.5, pr_auc=round(float(y.mean()), 4), recall_at_1pct_fpr=0.01),
        methods=methods, single_claim=single_claim, flagged=flags,
        anomaly_channel=anomaly_channel, checks=checks, checks_flat=checks_flat, edits=edits,
        probes=probes,
        everyday=care, invariance=moved, heldout=held, explanations=named, heads=ablated,
        throughput=speed, parity=same,
        seconds={**times, "total": round(time.monotonic() - started, 1)})


def novelty(patterns: Sequence[str], count: int, seed: int, steps: int,
            log: Callable[[str], None] = print) -> dict[str, NoveltyFigures]:
    """Per pattern: train without any claim of it (labelled or not), then the anomaly
    channel's AUROC and recall at 1% false positives on fresh claims of it against clean.

    The anomaly score never saw a label and the fraud head never saw this pattern: this is
    the "fraud it was never shown" figure. Cost: one training run per pattern.
    """
    out = {}
    for p in patterns:
        started = time.monotonic()
        log(f"novelty: training without {p} ({steps} steps)")
        ck = train(TrainConfig(steps=steps, train_count=30_000, holdout_pattern=p), log=log)
        ck.model_version = f"holdout-{p}"
        scorer = Scorer(ck, device="cpu")
        data = make_stream(count, seed, 0.05, patterns=(p,))
        _, anomaly, combined = scorer.combine(scorer.raw(*encode(scorer, data.claims),
                                                         attention=False))
        y = data.labels
        out[p] = NoveltyFigures(n=int(y.sum()), auroc=round(auroc(y, anomaly), 4),
                                recall_at_1pct_fpr=round(recall_at_fpr(y, anomaly), 4),
                                combined_auroc=round(auroc(y, combined), 4),
                                seconds=round(time.monotonic() - started, 1))
        log(f"novelty {p}: {out[p].to_json()}")
    return out


def throughput(scorer: Scorer, claims: list, batch: int = 256, n: int = 8192) -> Throughput:
    """`Scorer.score` claims/s as a service calls it: `batch` claims a call, explanations
    for flagged claims, no cross-claim checks (those are a Redis round trip in the worker),
    after a warm-up, with the long-lived objects frozen out of the garbage collector."""
    import torch

    checks, scorer.checks = scorer.checks, None
    part = claims[:n]
    scorer.score(part[:batch])
    gc.collect()
    gc.freeze()
    t0 = time.perf_counter()
    for i in range(0, len(part), batch):
        scorer.score(part[i:i + batch])
    per_s = len(part) / (time.perf_counter() - t0)
    gc.unfreeze()
    scorer.checks = checks
    return Throughput(claims_per_s=round(per_s, 1), batch=batch, claims=len(part),
                      threads=torch.get_num_threads(), device=str(scorer.device),
                      precision=scorer.precision,
                      explain="all" if scorer.explain_all else "flagged")

