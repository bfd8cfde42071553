"""Baselines on a flat encoding of the claim, for `claimscope eval` to beat.

The flat encoding is what a careful tabular modeller would build without sequence
models: demographics, specialty and place one-hot; counts of lines; log charges (total,
largest unit charge, largest drug unit price); the largest unit charge and drug price
relative to the reference top price (the same reference the ClaimFormer's tokenizer
uses); dose relative to the drug's normal range (largest ratio above max, largest below
min); largest units and days supply; and
multi-hot indicators of every diagnosis, procedure and drug code in the vocabulary.
Each baseline sees one claim at a time (no cross-claim state).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, IsolationForest

from model.claims import Claim
from model.vocabulary import Vocabulary


class FlatEncoder:
    def __init__(self, v: Vocabulary) -> None:
        self.v = v
        names = (["age", "n_dx", "n_proc", "n_med", "log_total", "log_max_unit_charge",
                  "log_max_drug_price", "dose_over_max", "dose_under_min", "max_units",
                  "max_days", "max_charge_ratio", "max_price_ratio"]
                 + [f"sex:{s}" for s in "FMU"]
                 + [f"spec:{s}" for s in sorted(v.specialties)]
                 + [f"pos:{p}" for p in sorted(v.places)]
                 + [f"dx:{c}" for c in sorted(v.diagnoses)]
                 + [f"proc:{c}" for c in sorted(v.procedures)]
                 + [f"drug:{d}" for d in sorted(v.drugs)])
        self.names = names
        self.col = {n: i for i, n in enumerate(names)}

    def encode(self, claims: Sequence[Claim]) -> np.ndarray:
        x = np.zeros((len(claims), len(self.names)), dtype=np.float32)
        col = self.col
        for i, c in enumerate(claims):
            row = x[i]
            unit = [float(p.charge) / p.units for p in c.procedures] or [0.0]
            price = [float(m.charge) / m.quantity for m in c.medications] or [0.0]
            over = under = charge_ratio = price_ratio = 0.0
            for m in c.medications:
                d = self.v.drugs.get(m.name)
                if d:
                    over = max(over, m.strength_mg / d.strength_max_mg)
                    under = max(under, d.strength_min_mg / m.strength_mg)
                    price_ratio = max(price_ratio, float(m.charge) / m.quantity /
                                      d.unit_price_high)
            for p in c.procedures:
                if (q := self.v.procedures.get(p.code)) is not None:
                    charge_ratio = max(charge_ratio, float(p.charge) / p.units / q.charge_high)
            row[:13] = [c.member_age, len(c.diagnoses), len(c.procedures), len(c.medications),
                        math.log1p(float(c.total_charge)), math.log1p(max(unit)),
                        math.log1p(max(price)), over, under,
                        max([p.units for p in c.procedures] or [0]),
                        max([m.days_supply for m in c.medications] or [0]),
                        charge_ratio, price_ratio]
            for key in (f"sex:{c.member_sex}", f"spec:{c.provider_specialty}",
                        f"pos:{c.place_of_service}", *(f"dx:{d}" for d in c.diagnoses),
                        *(f"proc:{p.code}" for p in c.procedures),
                        *(f"drug:{m.name}" for m in c.medications)):
                if (j := col.get(key)) is not None:
                    row[j] = 1.0
        return x


def gradient_boosting_scores(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                             seed: int) -> np.ndarray:
    """Supervised baseline: histogram gradient-boosted trees, probability of fraud."""
    gbt = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.1, random_state=seed,
                                         early_stopping=True, validation_fraction=0.15)
    return gbt.fit(train_x, train_y).predict_proba(test_x)[:, 1]


def isolation_forest_scores(train_x: np.ndarray, test_x: np.ndarray, seed: int) -> np.ndarray:
    """Unsupervised baseline: higher = more isolated = more anomalous."""
    forest = IsolationForest(n_estimators=300, random_state=seed, n_jobs=2)
    return -forest.fit(train_x).score_samples(test_x)
