"""`claimscope eval --providers`: the provider yardstick. Whom would an SIU look at first?

Protocol:

- **Population**: a `model.schemes.ProviderWorld` from a fresh seed (never a training seed),
  `count` claims over one risk window (~13 weeks: members are sized so), a provider per 200
  claims, SCHEME_SHARE of them schemers at 20-50% intensity, honest outliers among the rest,
  and the generator's scattered single-claim frauds as everywhere else.
- **Scoring**: every claim through the checkpoint's `Scorer` (model, checks, payer edits),
  in stream order, as a worker scores them; each Score's channels and the claim go into a
  `model.peers.ProfileBook`; `model.peers.rank` ranks the providers.
- **Metrics** (a provider is positive when it runs a scheme): AUROC of the risk, precision
  among the top 20, honest outliers in the top 20, each scheme's best rank; the same for the
  baseline, the provider's share of flagged claims. 95% intervals: percentile bootstrap over
  providers (`bootstrap` resamples; top-20 figures re-ranked within each resample). Chance:
  AUROC 0.5, precision at 20 the schemers' share.
- **Schemes alone, at 30%**: a second world (the next seed, half the claims and providers)
  whose schemers all work 30% of their claims and whose single-claim frauds stay scattered
  (concentration 0): AUROC and precision at 20 when only the schemes set schemers apart,
  each scheme's schemers with a reason, and the upcoders: how many get a reason, how many
  by the level-5 measure itself, how many rank in the top 20 (the issue's bar).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from model.claims import Claim
from model.metrics import auroc
from model.peers import (
    REASON_SURPRISE,
    SHORT_WEEKS,
    WINDOW_WEEKS,
    ProfileBook,
    ProviderRisk,
    contribution,
    rank,
)
from model.quality.results import (
    Baseline,
    ProviderEval,
    RankChance,
    RankFigures,
    SchemeFigures,
    SchemesAlone,
    TopProvider,
    Upcoders,
)
from model.schemes import SCHEMES, ProviderWorld
from model.scorer import Scorer

CLAIMS_PER_PROVIDER = 200
UPCODING_INTENSITY = 0.3  # the bar: upcoders found at 30% of their claims
CHUNK = 2_000  # claims scored at once


def top_precision(y: np.ndarray, s: np.ndarray, k: int = 20) -> float:
    """Share of positives among the k highest scores (ties: the order of the input)."""
    order = np.argsort(-s, kind="stable")[:k]
    return float(y[order].mean()) if len(order) else float("nan")


def top_count(mask: np.ndarray, s: np.ndarray, k: int = 20) -> int:
    return int(mask[np.argsort(-s, kind="stable")[:k]].sum())


def _interval(fn: Callable[[np.ndarray], float], resamples: list[np.ndarray]) -> list[float]:
    boots = np.array([fn(idx) for idx in resamples], dtype=float)
    boots = boots[~np.isnan(boots)]
    lo, hi = np.percentile(boots, [2.5, 97.5]) if len(boots) else (np.nan, np.nan)
    return [round(float(lo), 4), round(float(hi), 4)]


def ranked_world(scorer: Scorer, world: ProviderWorld, count: int,
                 log: Callable[[str], None]) -> tuple[list[ProviderRisk], dict[str, float]]:
    """The world's providers ranked as a worker ranks them, and each one's share of
    flagged claims (the baseline)."""
    log(f"generating {count:,} claims of {len(world.labels)} providers")
    items = list(world.generate(count))
    book = ProfileBook()
    flagged: dict[str, list[int]] = {}
    for i in range(0, len(items), CHUNK):
        claims = [Claim.model_validate(x.claim) for x in items[i:i + CHUNK]]
        for c, s in zip(claims, scorer.score(claims), strict=True):
            book.add(contribution(c, s.flagged_by, scorer.vocab))
            flagged.setdefault(c.provider_id, []).append(int(s.flagged))
        log(f"scored {min(i + CHUNK, len(items)):,} of {len(items):,} claims")
    ranked = rank(book.profiles(), book.profiles(SHORT_WEEKS))
    return ranked, {p: float(np.mean(f)) for p, f in flagged.items()}


def evaluate_providers(scorer: Scorer, count: int = 80_000, seed: int = 2029,
                       fraud_rate: float = 0.05, bootstrap: int = 1_000,
                       log: Callable[[str], None] = print) -> ProviderEval:
    """The provider yardstick (module docstring); its `to_json()` is the `providers` section
    of `eval --providers --json`."""
    started = time.monotonic()
    providers = max(60, count // CLAIMS_PER_PROVIDER)
    world = ProviderWorld(seed=seed, size=count, fraud_rate=fraud_rate, providers=providers)
    ranked, flagged = ranked_world(scorer, world, count, log)
    ids = [r.provider_id for r in ranked]
    labels = [world.labels[p] for p in ids]
    y = np.array([x.fraud for x in labels], dtype=float)
    risk = np.array([r.risk for r in ranked])
    share = np.array([flagged[p] for p in ids])
    honest = np.array([x.outlier is not None for x in labels])
    rng = np.random.default_rng(seed)
    resamples = [rng.integers(0, len(y), len(y)) for _ in range(bootstrap)]

    def figures(s: np.ndarray) -> RankFigures:
        return RankFigures(
            auroc=round(auroc(y, s), 4),
            auroc_ci95=_interval(lambda idx: auroc(y[idx], s[idx]), resamples),
            precision_at_20=round(top_precision(y, s), 4),
            precision_at_20_ci95=_interval(lambda idx: top_precision(y[idx], s[idx]),
                                           resamples),
            honest_outliers_in_top20=top_count(honest, s))

    def best_rank(scheme: str, s: np.ndarray) -> int | None:
        order = list(np.argsort(-s, kind="stable"))
        ranks = [order.index(i) + 1 for i, x in enumerate(labels) if x.scheme == scheme]
        return min(ranks) if ranks else None

    ours, base = figures(risk), figures(share)
    log(f"schemes alone, at {UPCODING_INTENSITY:.0%} of claims (seed {seed + 1})")
    fixed = ProviderWorld(seed=seed + 1, size=count // 2, fraud_rate=fraud_rate,
                          providers=providers // 2, intensity=UPCODING_INTENSITY,
                          concentration=0.0)
    again, share2 = ranked_world(scorer, fixed, count // 2, log)
    upcoders = [r for r in again if fixed.labels[r.provider_id].scheme == "upcoder"]
    y2 = np.array([fixed.labels[r.provider_id].fraud for r in again], dtype=float)
    risk2 = np.array([r.risk for r in again])
    base2 = np.array([share2[r.provider_id] for r in again])
    return ProviderEval(
        figures=ours,
        baseline=Baseline("the provider's share of flagged claims", base),
        chance=RankChance(auroc=0.5, precision_at_20=round(float(y.mean()), 4)),
        providers=len(y), schemers=int(y.sum()), honest_outliers=int(honest.sum()),
        claims=count, seed=seed, window_weeks=WINDOW_WEEKS,
        schemes_alone_at_30pct=SchemesAlone(
            seed=seed + 1, claims=count // 2, providers=len(y2), schemers=int(y2.sum()),
            auroc=round(auroc(y2, risk2), 4), precision_at_20=round(top_precision(y2, risk2), 4),
            baseline_auroc=round(auroc(y2, base2), 4),
            by_scheme={s: sum(bool(r.reasons) for r in again
                              if fixed.labels[r.provider_id].scheme == s) for s in SCHEMES},
            schemers_by_scheme={s: sum(x.scheme == s for x in fixed.labels.values())
                                for s in SCHEMES}),
        upcoders_at_30pct=Upcoders(
            providers=len(upcoders), with_reasons=sum(bool(r.reasons) for r in upcoders),
            in_top20=sum(again.index(r) < 20 for r in upcoders),
            by_level5=sum(any(v.measure == "level5" and v.surprise >= REASON_SURPRISE
                              for v in r.measures) for r in upcoders)),
        by_scheme={s: SchemeFigures(
            providers=sum(x.scheme == s for x in labels),
            with_reasons=sum(bool(r.reasons) for r, x in zip(ranked, labels, strict=True)
                             if x.scheme == s),
            best_rank=best_rank(s, risk), baseline_best_rank=best_rank(s, share),
            intensities=sorted(x.intensity for x in labels if x.scheme == s))
            for s in SCHEMES},
        top20=[TopProvider(provider_id=r.provider_id, scheme=world.labels[r.provider_id].scheme,
                           outlier=world.labels[r.provider_id].outlier, risk=r.risk,
                           reason=r.reasons[0] if r.reasons else None) for r in ranked[:20]],
        seconds=round(time.monotonic() - started, 1))
