"""The artefact probe: generated fraud leaves no mark a shape-only classifier can read, and
the probe does see a mark where there is one."""

from __future__ import annotations

import numpy as np

from model.generator import SINGLE_CLAIM_PATTERNS, ClaimGenerator
from model.quality.probe import MAX_AUROC, artefact_probe

ITEMS = list(ClaimGenerator(seed=21, fraud_rate=0.5, size=30_000).generate(30_000))
CLAIMS = [i.claim for i in ITEMS]
PATTERNS = np.array([i.fraud_pattern for i in ITEMS])


def test_single_claim_patterns_leave_no_shape_a_probe_can_read():
    probe = artefact_probe(CLAIMS, PATTERNS)
    assert set(SINGLE_CLAIM_PATTERNS) <= set(probe)
    high = {p: probe[p] for p in SINGLE_CLAIM_PATTERNS if probe[p] > MAX_AUROC}
    assert not high, probe


def test_the_probe_sees_a_planted_mark():
    """Clean claims with a whole-dollar total, relabelled as a pattern: the probe finds it."""
    planted = PATTERNS.copy()
    for k, c in enumerate(CLAIMS):
        if planted[k] == "none" and float(c["total_charge"]).is_integer():
            planted[k] = "planted"
    assert artefact_probe(CLAIMS, planted)["planted"] > 0.9
