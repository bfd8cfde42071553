"""What `claimscope eval` measures, typed: `evaluate` returns an `EvalResult`, the CLI
renders it, and `EvalResult.to_json()` is the `--json` output (its keys and nesting are
what scripts and docs/benchmarks read; model/quality/evaluate.py says what each figure is).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from model.checks import CheckLimits
from model.parity import Parity
from model.results import Result, jsonable


# -- metrics ------------------------------------------------------------------------------
@dataclass
class Interval(Result):
    """A metric with its 95% percentile-bootstrap interval."""

    value: float
    ci95: list[float]


@dataclass
class Figures(Result):
    """The three headline metrics as point values (`single_claim`, `chance`)."""

    auroc: float
    pr_auc: float
    recall_at_1pct_fpr: float


@dataclass
class PatternFigures(Result):
    """One method on one pattern (or mismatch variant) against the clean claims."""

    n: int  # fraud claims of the pattern
    auroc: float
    auroc_ci95: list[float]
    recall_at_1pct_fpr: float
    recall_ci95: list[float]


@dataclass
class MethodFigures(Result):
    """One method on the whole test set, with intervals, and per pattern."""

    auroc: Interval
    pr_auc: Interval
    recall_at_1pct_fpr: Interval
    per_pattern: dict[str, PatternFigures]


@dataclass
class Flagged(Result):
    """The claims any channel flags, against the labels."""

    precision: float
    recall: float
    clean_fpr: float


@dataclass
class AnomalyFigures(Result):
    """The anomaly channel on its own."""

    fpr_budget: float
    cut: float
    clean_fpr: float
    recall: float
    fraud_only_it_flags: int
    per_pattern: dict[str, float]  # recall


@dataclass
class WayFigures(Result):
    """The claims one way of flagging flags, against the labels."""

    precision: float
    recall: float
    clean_fpr: float
    per_pattern: dict[str, float]  # recall
    # of the pattern's claims and the clean ones, the share of those flagged that are the
    # pattern's (NaN where it flags none)
    per_pattern_precision: dict[str, float]


@dataclass
class EditsReport(Result):
    """The payer edits (`model.edits`) alone, the model alone (its fraud and anomaly
    channels, no checks) and either, on the yardstick; and each edit's claims."""

    edits: WayFigures
    model: WayFigures
    either: WayFigures
    fired: dict[str, int]  # claims each edit fires on
    fired_clean: dict[str, int]  # ... of them clean


# -- cross-claim checks -------------------------------------------------------------------
@dataclass
class CheckFigures(Result):
    """One cross-claim check: recall on its pattern, false positives on clean claims."""

    recall: float
    clean_fpr: float
    frequent_care_fpr: float
    frequent_care_claims: int


@dataclass
class CheckReport(Result):
    """The checks with one set of limits. JSON: {"limits": {...}, <check>: {...}, ...}."""

    limits: CheckLimits
    checks: dict[str, CheckFigures]

    def to_json(self) -> dict[str, Any]:
        lim = self.limits
        return {"limits": {"window_days": lim.window_days,
                           "velocity_limit": lim.velocity_limit,
                           "per_kind": lim.per_kind,
                           "repeat_codes": sorted(lim.repeat_codes)},
                **jsonable(self.checks)}


# -- probes and the everyday suite --------------------------------------------------------
@dataclass
class Probes(Result):
    """AUROC per pattern of the give-away probes (`model.quality.probe`), and the codes
    only fraud claims carry."""

    artefact: dict[str, float]
    artefact_all_clean: dict[str, float]
    identity: dict[str, float]
    fraud_only_codes: list[str]


@dataclass
class MutationFigures(Result):
    """One everyday-care mutation against the same claims unmutated."""

    claims: int
    auroc: float
    flag_rate: float | None
    named_top1: float  # share of the flagged whose first explanation token names the change
    named_claims: int


@dataclass
class UnknownFigures(Result):
    """Clean claims read with some header fields unknown (the contract's nulls and "U")."""

    flag_rate: float
    flag_rate_ci95: list[float]
    ratio: float | None  # to the same claims read in full (None when those flag none)


@dataclass
class EverydayReport(Result):
    """The everyday-care suite (`model.quality.everyday`)."""

    kinds: int
    claims: int
    clean_flag_rate: float
    clean_flag_rate_ci95: list[float]
    clean_flagged_by: dict[str, int]  # channel -> clean claims it flagged
    flagged_kinds: dict[str, float]  # kind -> its flag rate, highest first, flagged ones only
    mutations: dict[str, MutationFigures]
    # the same clean claims read with header fields unknown (UNKNOWN_READINGS): each
    # reading's flag rate, its 95% interval, and its ratio to the rate read in full
    read_unknown: dict[str, UnknownFigures] = field(default_factory=dict)


# -- invariance ---------------------------------------------------------------------------
# each swap's key, and the key of the same claims' figure as they were
LISTED = {"oov_sibling": "in_vocab", "unlisted_procedure": "unlisted_procedure_listed"}


@dataclass
class SwapFigures(Result):
    """Clean claims with their listed codes of one kind swapped for unlisted ones of the same
    family: flagged (any channel) as they were and as swapped."""

    listed_fpr: float  # the same claims as they were
    fpr: float
    anomaly_fpr: float
    claims: int
    codes_swapped: int


@dataclass
class HeldoutFigures(Result):
    """Clean claims flagged (any channel), by whether they carry codes training held out."""

    seen_code_fpr: float | None
    seen_code_claims: int
    heldout_code_fpr: dict[str, float | None]  # field -> rate (None: no such claim)
    heldout_code_claims: dict[str, int]
    heldout_codes: dict[str, int]


@dataclass
class Invariance(Result):
    """Decisions that move when nothing that matters does. JSON: one flat object (the
    swaps' figures as `in_vocab_fpr`, `oov_sibling_*`, `unlisted_procedure_listed_fpr`,
    `unlisted_procedure_*`)."""

    permutation_flag_rate_change: float
    permutation_flag_rate_delta: float
    permutation_claims: int
    oov_sibling: SwapFigures
    unlisted_procedure: SwapFigures

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "permutation_flag_rate_change": self.permutation_flag_rate_change,
            "permutation_flag_rate_delta": self.permutation_flag_rate_delta,
            "permutation_claims": self.permutation_claims}
        for name, listed in LISTED.items():
            s: SwapFigures = getattr(self, name)
            out |= {f"{listed}_fpr": s.listed_fpr, f"{name}_fpr": s.fpr,
                    f"{name}_anomaly_fpr": s.anomaly_fpr, f"{name}_claims": s.claims,
                    f"{name}_codes_swapped": s.codes_swapped}
        return out


# -- explanations, heads, speed -----------------------------------------------------------
@dataclass
class Explanations(Result):
    """ERASER figures per k (`"k1"`, `"k3"`, `"k5"`; empty without flagged claims) and the
    top-3 hit on mismatch claims."""

    claims: int
    comprehensiveness: dict[str, float]
    sufficiency: dict[str, float]
    random_comprehensiveness: dict[str, float]
    random_sufficiency: dict[str, float]
    top3_hit: float | None
    top3_chance: float | None
    top3_claims: int
    ranking: str


@dataclass
class HeadAblation(Result):
    """One head zeroed. JSON: {<pattern>: AUROC change, ..., "specialisation": x}."""

    auroc_change: dict[str, float]
    specialisation: float | None

    def to_json(self) -> dict[str, Any]:
        return {**self.auroc_change, "specialisation": self.specialisation}


@dataclass
class Throughput(Result):
    claims_per_s: float
    batch: int
    claims: int
    threads: int
    device: str
    precision: str  # the encoder blocks' number format: bf16, int8 or fp32
    explain: str  # "all" or "flagged"


@dataclass
class NoveltyFigures(Result):
    """A model trained without one pattern, measured on it."""

    n: int
    auroc: float  # the anomaly channel's
    recall_at_1pct_fpr: float
    combined_auroc: float
    seconds: float


# -- the whole --------------------------------------------------------------------------
@dataclass
class EvalResult(Result):
    """`claimscope eval`'s figures for one checkpoint (`to_json`: its `--json` output)."""

    count: int
    seed: int
    fraud_rate: float
    model_version: str
    threshold: float
    chance: Figures
    methods: dict[str, MethodFigures]
    single_claim: dict[str, Figures]
    flagged: Flagged
    anomaly_channel: AnomalyFigures
    checks: CheckReport
    checks_flat: CheckReport
    edits: EditsReport
    probes: Probes
    everyday: EverydayReport
    invariance: Invariance
    heldout: HeldoutFigures  # JSON: in "invariance", after its own figures
    explanations: Explanations
    heads: dict[str, HeadAblation]  # "L<layer>H<head>" -> its ablation
    throughput: Throughput
    parity: Parity | None  # the scoring path's decisions against fp32 eager (`model.parity`)
    seconds: dict[str, float]  # per part, and "total"
    novelty: dict[str, NoveltyFigures] | None = None  # only when asked for (`--novelty`)

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out["invariance"] |= out.pop("heldout")
        if self.novelty is None:
            del out["novelty"]
        return out


# -- providers (`claimscope eval --providers`) ----------------------------------------------
@dataclass
class RankFigures(Result):
    """One ranking of providers against their labels (schemer or not), with 95% bootstrap
    intervals over providers."""

    auroc: float
    auroc_ci95: list[float]
    precision_at_20: float
    precision_at_20_ci95: list[float]
    honest_outliers_in_top20: int


@dataclass
class Baseline(Result):
    """The fair baseline's ranking, named (JSON: its name, then its figures)."""

    name: str
    figures: RankFigures

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, **self.figures.to_json()}


@dataclass
class RankChance(Result):
    """What a random ranking scores: AUROC 0.5, precision at 20 the schemers' share."""

    auroc: float
    precision_at_20: float


@dataclass
class SchemesAlone(Result):
    """A second world whose frauds are the provider schemes alone, at a fixed intensity."""

    seed: int
    claims: int
    providers: int
    schemers: int
    auroc: float
    precision_at_20: float
    baseline_auroc: float
    by_scheme: dict[str, int]  # scheme -> its providers ranked with a reason
    schemers_by_scheme: dict[str, int]


@dataclass
class Upcoders(Result):
    """The upcoders of the schemes-alone world: how many carry a reason, rank in the top
    20, and are named by their level-5 share."""

    providers: int
    with_reasons: int
    in_top20: int
    by_level5: int


@dataclass
class SchemeFigures(Result):
    """One scheme in the main world: its providers, how many carry a reason, and the best
    rank any of them reaches under the ranking and under the baseline."""

    providers: int
    with_reasons: int
    best_rank: int | None
    baseline_best_rank: int | None
    intensities: list[float]


@dataclass
class TopProvider(Result):
    """One of the ranking's first 20, with its label and its first reason."""

    provider_id: str
    scheme: str | None
    outlier: str | None
    risk: float
    reason: str | None


@dataclass
class ProviderEval(Result):
    """The provider yardstick (`model.quality.providers`): the ranking's own figures first
    (JSON: at the top level), then the baseline's, chance, the world, and the breakdowns
    (`to_json`: the `providers` section of `eval --providers --json`)."""

    figures: RankFigures
    baseline: Baseline
    chance: RankChance
    providers: int
    schemers: int
    honest_outliers: int
    claims: int
    seed: int
    window_weeks: int
    schemes_alone_at_30pct: SchemesAlone
    upcoders_at_30pct: Upcoders
    by_scheme: dict[str, SchemeFigures]
    top20: list[TopProvider]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        return {**out.pop("figures"), **out}


# -- the architecture sweep (`claimscope sweep`) -------------------------------------------
@dataclass
class SweepRow(Result):
    """One architecture, trained and measured as every other in the sweep."""

    layers: int
    heads: int
    d_model: int
    params: int
    auroc: float
    pr_auc: float
    accuracy: float
    balanced_accuracy: float
    cpu_claims_per_s: float  # `Scorer.score`, 2 threads, batch 256
    train_seconds: float
    best_step: int


@dataclass
class SweepResult(Result):
    """The sweep's rows and how they were made (`to_json`: `sweep --json`)."""

    architectures: list[SweepRow]
    steps: int
    train_count: int
    count: int
    seed: int
    train_device: str
