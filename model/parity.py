"""How far a scoring path moves decisions against the fp32 eager reference.

bf16 and int8 (`Scorer`'s `precision`) are faster than fp32 and not the same numbers; a
path is kept only while it leaves decisions alone (issue "fast CPU": at most 0.1% changed).
`claimscope bench` measures it on its own claims, `claimscope eval` on the yardstick.

    >>> p = parity("int8", np.array([0.2, 0.9, 0.5]), np.array([False, True, True]),
    ...            np.array([0.2, 0.8, 0.4]), np.array([False, True, False]))
    >>> p.changed, p.share_changed, p.max_score_diff
    (1, 0.33333, 0.1)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.results import Result


@dataclass
class Parity(Result):
    precision: str  # the path measured: bf16, int8 (fp32 against itself: nothing changes)
    claims: int
    changed: int  # claims flagged by one and not the other
    share_changed: float
    max_score_diff: float
    mean_score_diff: float


def parity(precision: str, ref_scores: np.ndarray, ref_flagged: np.ndarray,
           scores: np.ndarray, flagged: np.ndarray) -> Parity:
    """The decisions and scores of a path against the reference's, claim by claim."""
    diff = np.abs(np.asarray(scores, dtype=np.float64) - np.asarray(ref_scores))
    changed = int((np.asarray(flagged) != np.asarray(ref_flagged)).sum())
    n = len(diff)
    return Parity(precision=precision, claims=n, changed=changed,
                  share_changed=round(changed / n, 5) if n else 0.0,
                  max_score_diff=round(float(diff.max()), 6) if n else 0.0,
                  mean_score_diff=round(float(diff.mean()), 7) if n else 0.0)
