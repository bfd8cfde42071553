"""`claimscope train --claims/--labels`: an insurer's own history as training data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from model.checkpoint import load_checkpoint
from model.generator import CLEAN, ClaimGenerator
from model.history import FRAUD, HistoryError, bucket, history_data, read_history
from model.scorer import Scorer
from model.tokenizer import ClaimTokenizer
from model.training import TrainConfig, train
from model.vocabulary import default_vocabulary
from stream.cli import app

TINY = dict(steps=4, eval_every=2, batch_size=32)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """2,000 generated claims with two bad lines among them; labels for half, two bad."""
    folder = tmp_path_factory.mktemp("history")
    items = list(ClaimGenerator(seed=41, fraud_rate=0.1, size=2000).generate(2000))
    lines = [json.dumps(x.claim) for x in items]
    lines[3:3] = ['{"claim_id": "broken"}', "not json at all"]  # lines 4 and 5
    (folder / "claims.jsonl").write_text("\n".join(lines) + "\n")
    labels = [json.dumps({"claim_id": x.claim["claim_id"], "fraud": x.fraud_pattern != CLEAN,
                          **({"pattern": x.fraud_pattern} if x.fraud_pattern != CLEAN else {})})
              for x in items[:1000]]
    labels += ['{"claim_id": "C-nobody", "fraud": true}', '{"claim_id": "x", "fraud": "maybe"}']
    (folder / "labels.jsonl").write_text("\n".join(labels) + "\n")
    return folder, items


def test_bad_lines_are_reported_with_their_line_numbers_and_the_rest_kept(files):
    folder, items = files
    h = read_history(folder / "claims.jsonl", folder / "labels.jsonl")
    assert len(h.claims) == len(items)
    assert len(h.labels) == 1000
    where = [e.split(": ", 1)[0] for e in h.errors]
    assert where == [f"{folder / 'claims.jsonl'}:4", f"{folder / 'claims.jsonl'}:5",
                     f"{folder / 'labels.jsonl'}:1001", f"{folder / 'labels.jsonl'}:1002"]
    assert "not among the claims" in h.errors[2]
    assert {p for p in h.labels.values()} <= {CLEAN, FRAUD, *(x.fraud_pattern for x in items)}


def test_a_file_that_is_not_claims_is_one_clear_error(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello\nworld\n")
    with pytest.raises(HistoryError, match="holds no valid claim"):
        read_history(path)


def test_history_splits_by_claim_and_learns_its_own_references(files):
    folder, _ = files
    h = read_history(folder / "claims.jsonl", folder / "labels.jsonl")
    base = ClaimTokenizer.from_vocabulary(default_vocabulary())
    data = history_data(h, base)
    held = {c.claim_id for c in data.val.claims} | {c.claim_id for c in data.cal.claims}
    assert not held & {c.claim_id for c in data.unlabelled.claims}  # no claim in both
    assert all(bucket(c.claim_id) >= 2 for c in data.labelled.claims)
    assert {c.claim_id for c in data.labelled.claims} <= set(h.labels)
    assert len(data.unlabelled) > len(data.labelled)  # every training claim, labelled or not
    changed = [k for k, v in data.tokenizer.prices.items() if base.prices.get(k) != v]
    assert changed  # prices of codes billed often enough come from the history
    cov = data.source["coverage"]
    for field, c in cov.items():
        assert c["distinct"] == c["own"] + c["hierarchy"] + c["unknown"], field
    assert cov["diagnosis"]["hierarchy"] > 0  # unlisted siblings read through their ancestors


def test_training_on_a_history_with_and_without_labels(files):
    folder, _ = files
    for labels in (folder / "labels.jsonl", None):
        h = read_history(folder / "claims.jsonl", labels)
        data = history_data(h, ClaimTokenizer.from_vocabulary(default_vocabulary()))
        ck = train(TrainConfig(**TINY), log=lambda m: None, data=data)
        assert ck.metrics["data"]["source"] == "history"
        assert ck.metrics["data"]["labelled"] == (1000 if labels else 0)
        assert len(ck.calibration.anomaly_cuts) > 0
        if labels is None:
            assert ck.calibration.threshold == 1.0  # no fraud model: only anomaly and checks
        scores = Scorer(ck, device="cpu").score(data.cal.claims[:50] or data.val.claims[:50]
                                                or data.unlabelled.claims[:50])
        assert all(0 <= s.score <= 1 for s in scores)
        if labels is None:
            assert all("fraud_model" not in s.flagged_by for s in scores)


def test_train_cli_on_own_claims_writes_a_checkpoint_and_its_bad_lines(files, tmp_path):
    folder, _ = files
    out = tmp_path / "ck"
    r = CliRunner().invoke(app, ["train", "--claims", str(folder / "claims.jsonl"), "--labels",
                                 str(folder / "labels.jsonl"), "--steps", "3", "--out",
                                 str(out)])
    assert r.exit_code == 0, r.output
    assert "coverage: diagnosis:" in r.output and "claims.jsonl:4" in r.output
    ck = load_checkpoint(out)
    assert ck.training["source"] == "history"
    assert len((out / "bad_lines.txt").read_text().splitlines()) == 4
    assert np.isfinite(ck.calibration.threshold)
    card = (out / "model_card.md").read_text()
    assert "an insurer's history of 2,000 claims, 1,000 labelled" in card
    assert "Coverage, diagnosis:" in card


def test_train_cli_refuses_labels_without_claims_and_files_that_are_not_claims(tmp_path):
    r = CliRunner().invoke(app, ["train", "--labels", str(tmp_path / "l.jsonl")])
    assert r.exit_code != 0 and "--labels needs --claims" in r.output
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")
    r = CliRunner().invoke(app, ["train", "--claims", str(path), "--out", str(tmp_path / "x")])
    assert r.exit_code != 0 and "holds no valid claim" in r.output
    assert not (tmp_path / "x").exists()
