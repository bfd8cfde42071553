"""The score contract: what ClaimScope says about a claim (topics `claims.scored`,
`claims.flagged`, Redis `cs:claim:{claim_id}`).

Direction: `score` is in [0, 1] and higher means more suspicious; a claim is `flagged`
when `score >= threshold`, or when the anomaly channel fires on its own (its anomaly
logit above the cut for the configured false-positive budget on clean claims, e.g. 0.5%).
`flagged_by` names every channel that fired (`CHANNELS`). The explanation attributes the
deciding channel's logit to tokens (the top tokens, the fields they belong to, the token
each attends to most) and gives one human reason; it also lists which tokens surprised
the anomaly head.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ANOMALY_FPR = 0.005  # the anomaly channel's default false-positive budget on clean claims
ANOMALY_FPRS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)  # budgets a checkpoint calibrates
# The encoder blocks' number format: auto = bf16 on GPUs and on CPUs with AMX, else
# int8 (dynamically quantised linear layers); fp32 is the reference the others are checked on
Precision = Literal["auto", "fp32", "bf16", "int8"]
# The payer edits (`model.edits`): CMS's rules, each citing itself in `explanation.edits`
EDIT_CHANNELS = ("ncci_ptp", "mue", "add_on", "mce_age", "mce_sex")
CHANNELS = ("fraud_model", "anomaly", "duplicate_billing", "member_velocity", *EDIT_CHANNELS)


class ScoreModel(BaseModel):
    """The Score's parts. The scorer builds them with `model_construct` (no validation: it
    computed every value itself): 6 µs a claim cheaper than validating, ~2% of scoring;
    writing pydantic's private state directly saved another 6 µs and is not worth it
    (docs/operations.md). tests/test_model.py checks a constructed Score dumps exactly like
    a validated one."""

    model_config = ConfigDict(extra="forbid")


class TokenPair(ScoreModel):
    """One attention edge in words: `query` looked at `key` with `weight` in (layer, head)."""

    query: str
    key: str
    layer: int
    head: int
    weight: float


class AttributedToken(ScoreModel):
    """A token that moved the deciding channel's logit, most first (`model.explain`)."""

    token: str
    field: str
    attribution: float = Field(description="how far the deciding channel's logit falls "
                                           "without the token (leave-one-out), in logit units")


class SurprisingToken(ScoreModel):
    """A token the replaced-token head found unlikely given the rest of the claim."""

    token: str
    field: str
    surprise: float = Field(description="-log p(token | rest of claim), in nats")


class EditCitation(ScoreModel):
    """A payer edit the claim breaks, cited: what an SIU reviewer can act on."""

    edit: str = Field(description="the channel: ncci_ptp, mue, add_on, mce_age or mce_sex")
    codes: list[str] = Field(description="the codes the edit names (column 1 first for PTP)")
    detail: str = Field(description="what the rule says, with its indicator and rationale")
    table_version: str = Field(description="the CMS table and release the edit is from")


class Explanation(ScoreModel):
    """Why, for the channel that decided (`explained`); a claim the model does not flag
    (and that `Scorer(explain="all")` did not ask about) has only its reason, which says
    nothing is unusual: naming its least expected tokens would read as an accusation the
    score does not make."""

    reason: str = Field(description="one line a person can read")
    explained: str | None = Field(
        default=None, description="the channel the tokens, pairs and fields explain: "
        "fraud_model (the combined score) or anomaly; None when not explained")
    top_tokens: list[AttributedToken] = Field(default_factory=list)
    top_pairs: list[TokenPair] = Field(
        description="each top token and the token it attends to most, sinks aside")
    field_importance: dict[str, float] = Field(
        description="positive attribution summed per field type, sums to 1 (empty when "
        "not explained)"
    )
    surprising_tokens: list[SurprisingToken] = Field(
        description="the anomaly head's three least expected tokens (when explained)")
    checks: list[str] = Field(
        default_factory=list, description="cross-claim checks that fired (duplicate, velocity)"
    )
    edits: list[EditCitation] = Field(
        default_factory=list, description="payer edits the claim breaks, each cited")


class Components(ScoreModel):
    fraud_probability: float = Field(description="supervised [CLS] head, calibrated, 0-1")
    anomaly: float = Field(description="self-supervised surprise mapped to 0-1")


class Score(ScoreModel):
    claim_id: str
    member_id: str
    provider_id: str
    score: float = Field(ge=0, le=1)
    flagged: bool
    threshold: float
    flagged_by: list[str] = Field(
        default_factory=list, description="channels that fired: fraud_model (the combined "
        "score alone at or above threshold), anomaly (the self-supervised channel past its "
        "false-positive budget), duplicate_billing, member_velocity, and the payer edits "
        "ncci_ptp, mue, add_on, mce_age, mce_sex (`explanation.edits` cites each)")
    components: Components
    explanation: Explanation
    unknown: list[Literal["member_age", "member_sex", "provider_specialty"]] = Field(
        default_factory=list, description="header fields the claim did not know (member_age, "
        "member_sex, provider_specialty): the model read each as its field's unknown token")
    model_version: str
    scored_at: dt.datetime
    latency_ms: float | None = Field(
        default=None, description="submitted to the broker -> scored, when known"
    )
