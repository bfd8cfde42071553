"""Fit a generated checkpoint's score rule again, on the claims it was calibrated on.

    python scripts/recalibrate.py model/default            # old and new calibration, JSON
    python scripts/recalibrate.py model/default --write    # and write the new one into it

The claims are rebuilt from the checkpoint's training record (`model.training.recalibrate`:
its seed + 3, 8,000 labelled claims and a 40,000-claim stream's clean ones for the default
run); the weights, and so `model_version`, stay as they are. Run it after a change in how
the scorer reads the model's outputs. On 2026-12-05 the anomaly logit came to read only
the tokens whose code training showed, and `model/default` was refitted with it
(docs/model.md, "The anomaly channel"). ~1 minute here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from model.checkpoint import load_checkpoint, save_checkpoint
from model.training import recalibrate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--write", action="store_true", help="write the new calibration")
    args = ap.parse_args()
    ck = load_checkpoint(args.checkpoint)
    before = dict(ck.calibration.__dict__)
    ck.calibration, metrics = recalibrate(ck)
    ck.metrics = {**ck.metrics, "calibration": metrics}
    print(json.dumps({"model_version": ck.model_version, "before": before,
                      "after": ck.calibration.__dict__, "calibration_set": metrics},
                     indent=2))
    if args.write:
        version = save_checkpoint(ck, args.checkpoint)
        assert version == ck.model_version, "the weights changed on the way back"


if __name__ == "__main__":
    main()
