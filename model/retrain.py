"""Fine-tune a checkpoint on investigators' labels without forgetting everything else.

Feedback is scarce (tens to thousands of labels) and biased (only flagged claims get
looked at), so it is never trained on alone: each step's labelled batch is one quarter
feedback (sampled with replacement) and three quarters freshly generated claims, and the
surprise head keeps its replaced-token task on generated claims. The score rule is then
re-calibrated on held-out generated claims, and the new weights get a new `model_version`.

The report says what changed where it matters: on the feedback itself (mean calibrated
score of the claims labelled fraud and of the false alarms, and how many the threshold
gets right) and on fresh generated claims (AUROC, PR-AUC), before and after.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import numpy as np
import torch

from model.checkpoint import Checkpoint
from model.claims import Claim
from model.dataset import ClaimSet, claim_set, make_claim_set
from model.generator import CLEAN, SINGLE_CLAIM_PATTERNS
from model.results import Result
from model.scorer import Scorer
from model.training import (
    Replacer,
    anomaly_history,
    calibrate,
    heldout_set,
    length_batches,
    metrics_of,
    predict,
    train_step,
)
from model.vocabulary import default_vocabulary


@dataclass
class RetrainConfig:
    steps: int = 300
    lr: float = 3e-4  # a tenth of training's peak: adjust, do not relearn
    batch_size: int = 128
    feedback_share: float = 0.25
    mix_count: int = 20_000  # generated claims mixed in
    eval_count: int = 5_000
    seed: int = 4321
    replace_rate: float = 0.15


@dataclass
class FeedbackFigures(Result):
    """The model on the feedback itself."""

    mean_score_labelled_fraud: float | None  # None: no claim labelled fraud
    mean_score_false_alarms: float | None  # None: no false alarm
    agreement: float  # share of the labels the threshold gets right


@dataclass
class FreshFigures(Result):
    """The fraud head on fresh generated claims."""

    auroc: float
    pr_auc: float


@dataclass
class Measured(Result):
    feedback: FeedbackFigures
    fresh: FreshFigures


@dataclass
class RetrainReport(Result):
    """What a retraining changed (`to_json`: `claimscope retrain --json`, before the CLI
    adds where it wrote the new checkpoint)."""

    from_version: str
    feedback: int  # labels trained on
    feedback_fraud: int  # of them labelled fraud
    before: Measured
    after: Measured
    steps: int


def feedback_set(ck: Checkpoint, claims: list[Claim], labels: list[bool]) -> ClaimSet:
    return claim_set(ck.tokenizer, list(claims), ["feedback" if y else CLEAN for y in labels])


def measure(ck: Checkpoint, feedback: ClaimSet, fresh: ClaimSet) -> Measured:
    scorer = Scorer(ck, device="cpu", precision="fp32")
    _, _, on_fb = scorer.combine(scorer.raw(feedback.values, feedback.fields, attention=False))
    y = feedback.labels.astype(bool)
    fraud, _, _ = predict(ck.model, fresh)
    return Measured(
        FeedbackFigures(
            mean_score_labelled_fraud=round(float(on_fb[y].mean()), 4) if y.any() else None,
            mean_score_false_alarms=round(float(on_fb[~y].mean()), 4) if (~y).any() else None,
            agreement=round(float(((on_fb >= scorer.threshold) == y).mean()), 4)),
        FreshFigures(**{k: round(v, 4) for k, v in metrics_of(fresh.labels, fraud).items()}))


def retrain(ck: Checkpoint, claims: list[Claim], labels: list[bool], cfg: RetrainConfig,
            log=print) -> tuple[Checkpoint, RetrainReport]:
    """A new checkpoint (unsaved, model_version empty) and the before/after report."""
    if not claims:
        raise ValueError("no feedback to retrain on")
    torch.manual_seed(cfg.seed)
    tok = ck.tokenizer
    fb = feedback_set(ck, claims, labels)
    log(f"feedback: {int(fb.labels.sum())} labelled fraud, {int((1 - fb.labels).sum())} false "
        f"alarms; mixing in {cfg.mix_count:,} generated claims")
    out = heldout_set(ck.training)  # still never trained on: eval measures them as such
    mixed = make_claim_set(tok, cfg.mix_count, cfg.seed, 0.25, SINGLE_CLAIM_PATTERNS, out)
    unlabelled = make_claim_set(tok, cfg.mix_count, cfg.seed + 1, 0.05, SINGLE_CLAIM_PATTERNS,
                                out)
    fresh = make_claim_set(tok, cfg.eval_count, cfg.seed + 2, 0.05, SINGLE_CLAIM_PATTERNS)
    cal_set = make_claim_set(tok, cfg.eval_count, cfg.seed + 3, 0.05, SINGLE_CLAIM_PATTERNS)
    before = measure(ck, fb, fresh)
    log(f"before: {before.to_json()}")

    model = copy.deepcopy(ck.model).cpu().train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    replacer = Replacer(tok, default_vocabulary(), unlabelled)
    n_fb = max(1, round(cfg.batch_size * cfg.feedback_share))
    mixed_batches = length_batches(mixed, cfg.batch_size - n_fb, rng)
    unlabelled_batches = length_batches(unlabelled, cfg.batch_size, rng)
    both = fb.concat(mixed)  # feedback rows first, then the generated ones
    for _ in range(cfg.steps):
        rows = np.concatenate([rng.integers(0, len(fb), n_fb), len(fb) + next(mixed_batches)])
        train_step(model, opt, (*both.batch(rows), torch.from_numpy(both.labels[rows])),
                   unlabelled.batch(next(unlabelled_batches)), replacer, cfg.replace_rate, gen)
    model.eval()
    # what neither the first training nor this one showed stays unseen: read through its
    # ancestors alone, and no evidence to the anomaly channel (`ClaimFormer.forget_unseen`;
    # a replacement is a gradient step on a token's vector, so without this the held-out
    # codes would leave `Scorer.novel`)
    model.forget_unseen(torch.from_numpy(np.unique(np.concatenate([
        np.flatnonzero(~ck.model.unseen_tokens().cpu().numpy()), both.values.ravel(),
        unlabelled.values.ravel(), replacer.seen]))))
    cal, cal_metrics = calibrate(model, cal_set,
                                 anomaly_history(tok, 5 * cfg.eval_count, cfg.seed + 3))
    new = Checkpoint(model, tok, cal, model_version="",
                     metrics={**ck.metrics, "calibration": cal_metrics},
                     training={**ck.training, "retrained_from": ck.model_version,
                               "retrain": asdict(cfg), "feedback": len(claims)},
                     check_limits=ck.check_limits)
    after = measure(new, fb, fresh)
    log(f"after: {after.to_json()}")
    return new, RetrainReport(from_version=ck.model_version, feedback=len(claims),
                              feedback_fraud=int(fb.labels.sum()), before=before, after=after,
                              steps=cfg.steps)
