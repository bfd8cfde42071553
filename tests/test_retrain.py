"""`claimscope retrain --feedback`: investigators' labels move the model, the rest stays."""

from __future__ import annotations

import json

import pytest

from model.checkpoint import load_checkpoint
from model.claims import Claim
from model.generator import ClaimGenerator
from model.retrain import RetrainConfig, retrain
from stream.feedback import Feedback

pytestmark = pytest.mark.integration


def clean_claims(n: int) -> list[Claim]:
    """The first `n` professional claims of a clean stream (its facility claims left out:
    the investigators' labels here are on clinicians' claims)."""
    gen = ClaimGenerator(seed=91, fraud_rate=0.0, size=2000)
    return [Claim.model_validate(x.claim) for x in gen.generate(2 * n)
            if "claim_type" not in x.claim][:n]


def test_feedback_moves_the_labelled_claims_and_fresh_metrics_hold():
    ck = load_checkpoint("default")
    claims = clean_claims(40)  # investigators say: these "clean-looking" claims are fraud
    # 80 steps, not 40: 40 one-cycle steps are mostly warm-up and cool-down, and moved the
    # labelled claims' mean score by +-0.001 either way as the generator's world changed
    # (0.0031 -> 0.0047, then 0.0096 -> 0.0085); 80 move it by ~3x (0.0096 -> 0.0267)
    cfg = RetrainConfig(steps=80, mix_count=3000, eval_count=1500)
    new, report = retrain(ck, claims, [True] * 40, cfg, log=lambda m: None)
    before, after = report.before, report.after
    assert (after.feedback.mean_score_labelled_fraud
            > before.feedback.mean_score_labelled_fraud)
    assert after.fresh.auroc > before.fresh.auroc - 0.05  # it did not forget
    assert new.model is not ck.model
    # a code training held out and the feedback does not carry, retraining did not show
    # either: still unseen, and no evidence (`Scorer.novel`); one the feedback carries is
    # seen now
    shown = set(ck.tokenizer.encode(claims).values.ravel().tolist())
    held = {ck.tokenizer.ids[f][c] for f, codes in ck.training["heldout"].items()
            for c in codes}
    assert held - shown and held & shown
    unseen = new.model.unseen_tokens()
    assert unseen[sorted(held - shown)].all() and not unseen[sorted(held & shown)].any()


def test_retrain_cli_reads_console_feedback_and_writes_a_new_version(namespace, cli, tmp_path):
    import redis

    r = redis.Redis.from_url(namespace.redis_url)
    claims = clean_claims(12)
    for i, c in enumerate(claims):
        fb = Feedback(claim_id=c.claim_id, label="fraud" if i % 2 else "false_alarm",
                      claim=json.loads(c.model_dump_json()))
        r.set(f"{namespace.key_prefix}feedback:{c.claim_id}", fb.model_dump_json())
    r.set(f"{namespace.key_prefix}feedback:broken", b"{not json")
    out = tmp_path / "retrained"
    done = cli(["retrain", "--feedback", "--steps", "5", "--out", str(out), "--json"],
               namespace, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["feedback"] == 12 and report["feedback_fraud"] == 6
    assert report["skipped_feedback"] == 1
    new = load_checkpoint(out)
    assert new.model_version == report["model_version"] != load_checkpoint("default").model_version
    assert set(report["before"]) == set(report["after"]) == {"feedback", "fresh"}


def test_retrain_without_feedback_is_one_line(namespace, cli):
    done = cli(["retrain", "--feedback"], namespace)
    assert done.returncode == 1
    assert "no usable feedback" in done.stderr and "Traceback" not in done.stderr
