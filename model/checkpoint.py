"""Checkpoint directory: weights, config, tokenizer, metrics, and a version that is a hash.

    weights.safetensors   model weights (safetensors: no pickle, nothing executes on load)
    config.json           model config, score calibration, threshold, training settings,
                          and `model_version` = first 16 hex digits of SHA-256(weights file)
    tokenizer.json        the token list and the drug ranges the dose buckets use
    metrics.json          validation metrics and head-specialisation snapshots
    checks.json           what the cross-claim checks take as normal, learned from the
                          training history (`model.checks.fit_limits`)
    model_card.md         for people: version, model, data, coverage, held-out metrics,
                          calibration and limits (`model_card`); written, never read

`load_checkpoint` recomputes the hash and refuses a weights file that does not match its
`model_version`, so a tampered or half-copied checkpoint never scores claims. It refuses a
checkpoint an earlier version wrote too (a config without a setting this model has, a
token list without what this tokenizer reads: `tokenizer.outdated`), naming what it lacks:
such a model was trained without it, so it is retrained, never read half-way.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from model.checks import CheckLimits
from model.tokenizer import ClaimTokenizer
from model.transformer import ClaimFormer, ClaimFormerConfig

WEIGHTS, CONFIG, TOKENIZER, METRICS, CHECKS, CARD = (
    "weights.safetensors", "config.json", "tokenizer.json", "metrics.json", "checks.json",
    "model_card.md")


class CheckpointError(Exception):
    """A checkpoint that is missing, incomplete, or does not match its hash."""


@dataclass(frozen=True)
class Calibration:
    """Platt scaling fitted on held-out claims at 5% fraud (see `Scorer` for the rule).

    fraud probability = sigmoid(fraud_a * fraud_logit + fraud_c)
    combined          = sigmoid(a * fraud_logit + b * anomaly_logit + c)

    The anomaly channel flags on its own: `anomaly_cuts[i]` is the anomaly logit that a
    share `anomaly_fprs[i]` of clean held-out claims reach.
    """

    fraud_a: float = 1.0
    fraud_c: float = 0.0
    a: float = 1.0
    b: float = 0.0
    c: float = 0.0
    threshold: float = 0.5
    anomaly_fprs: tuple[float, ...] = ()
    anomaly_cuts: tuple[float, ...] = ()

    def anomaly_cut(self, fpr: float) -> float:
        """The anomaly logit to flag at for a false-positive budget `fpr` on clean claims,
        interpolated in log(fpr) between the calibrated budgets. Raises ValueError for a
        budget outside them (or without any).

        >>> Calibration(anomaly_fprs=(0.001, 0.01), anomaly_cuts=(3.0, 1.0)).anomaly_cut(0.01)
        1.0
        """
        if not self.anomaly_fprs:
            raise ValueError("the checkpoint calibrated no anomaly budgets")
        lo, hi = min(self.anomaly_fprs), max(self.anomaly_fprs)
        if not lo <= fpr <= hi:
            raise ValueError(f"anomaly false-positive budget {fpr} is outside what the "
                             f"checkpoint calibrated ({lo} to {hi})")
        order = np.argsort(self.anomaly_fprs)
        return float(np.interp(np.log(fpr), np.log(np.asarray(self.anomaly_fprs)[order]),
                               np.asarray(self.anomaly_cuts)[order]))


@dataclass
class Checkpoint:
    model: ClaimFormer
    tokenizer: ClaimTokenizer
    calibration: Calibration
    model_version: str
    path: Path | None = None
    metrics: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    check_limits: CheckLimits = field(default_factory=CheckLimits)


def default_checkpoint_path() -> Path:
    return Path(str(resources.files("model") / "default"))


def resolve(path: str | Path) -> Path:
    return default_checkpoint_path() if str(path) == "default" else Path(path)


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def save_checkpoint(ck: Checkpoint, out: Path) -> str:
    """Write `ck` to `out` and return its model_version."""
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in ck.model.state_dict().items()}
    save_file(state, out / WEIGHTS)
    version = file_hash(out / WEIGHTS)
    config = {"model_version": version, "model": ck.model.cfg.to_dict(),
              "calibration": ck.calibration.__dict__, "training": ck.training}
    (out / CONFIG).write_text(json.dumps(config, indent=2))
    ck.tokenizer.save(out / TOKENIZER)
    (out / METRICS).write_text(json.dumps(ck.metrics, indent=2))
    ck.check_limits.save(out / CHECKS)
    ck.model_version, ck.path = version, out
    (out / CARD).write_text(model_card(ck))
    return version


def model_card(ck: Checkpoint) -> str:
    """A checkpoint described for the people who deploy or audit it (Mitchell et al.
    2019, in short): what it is, what it learned from, how it did on held-out claims,
    how it flags, and what it does not do."""
    t, m, c, cfg = ck.training, ck.metrics, ck.calibration, ck.model.cfg
    held = m.get("calibration", {})
    data = t.get("source", "generator")
    lines = [f"# ClaimFormer {ck.model_version}", "",
             f"- Model: {cfg.n_layers} layers, {cfg.n_heads} heads, d_model {cfg.d_model}, "
             f"{ck.model.n_params():,} parameters; a supervised fraud head and a "
             "self-supervised surprise head (replaced-token detection); codes read against "
             f"counts of what goes with what in its training claims ({cfg.pair_rows:,} "
             f"contexts x {cfg.pair_cols:,} codes).",
             f"- Trained: {t.get('steps')} steps (best at step {m.get('best_step')}), "
             f"{m.get('train_seconds')} s on {t.get('device', 'cpu')}."]
    if data == "history":
        lines += [f"- Data: an insurer's history of {t.get('claims'):,} claims, "
                  f"{t.get('labelled'):,} labelled ({t.get('labelled_fraud'):,} fraud), "
                  f"{t.get('bad_lines'):,} bad lines skipped."]
        lines += [f"- Coverage, {f}: {v['distinct']:,} distinct, {v['own']:,} with a token of "
                  f"their own, {v['hierarchy']:,} read through their "
                  "code system's hierarchy only, "
                  f"{v['unknown']:,} unknown" for f, v in t.get("coverage", {}).items()]
    else:
        lines += [f"- Data: the synthetic generator (seed {t.get('seed')}, "
                  f"{t.get('train_count'):,} labelled claims at {t.get('fraud_rate')} fraud and "
                  f"as many unlabelled); patterns: {', '.join(t.get('patterns', []))}."]
        if t.get("heldout"):  # codes training never showed (`model.training.heldout_codes`)
            lines += ["- Never shown in training, so that `claimscope eval` can measure how "
                      "codes it never saw are read: " + ", ".join(
                          f"{len(v)} {f} codes" for f, v in t["heldout"].items())
                      + " (listed in config.json)."]
    lines += [f"- Held-out calibration slice: AUROC {held.get('auroc', float('nan')):.4f}, "
              f"PR-AUC {held.get('pr_auc', float('nan')):.4f} (the yardstick, `claimscope "
              "eval`, measures more and against baselines).",
              f"- Flags: score >= {c.threshold}; or the anomaly channel past its cut for the "
              f"configured budget ({len(c.anomaly_cuts)} budgets calibrated, "
              f"{min(c.anomaly_fprs, default=0)} to {max(c.anomaly_fprs, default=0)}); or a "
              f"cross-claim check (velocity limit {ck.check_limits.velocity_limit} visits in "
              f"{ck.check_limits.window_days} days, {len(ck.check_limits.per_kind)} series "
              "kinds of care).",
              "- Not for: deciding a claim without a person. A score is a reason to look, "
              "and an explanation names the tokens without which the score falls most, not proof."]
    return "\n".join(lines) + "\n"


def unreadable(config: dict) -> list[str]:
    """What keeps this version from reading a checkpoint whose config.json is `config`:
    the settings its model config or calibration lacks (an earlier version's) or has
    that this version does not know (a later one's). Empty when nothing."""
    out = []
    for key, kind in (("model", ClaimFormerConfig), ("calibration", Calibration)):
        have, want = set(config.get(key, {})), {f.name for f in fields(kind)}
        if want - have:
            out.append(f"its {key} has no {', '.join(sorted(want - have))}")
        if have - want:
            out.append(f"its {key} has unknown {', '.join(sorted(have - want))}")
    return out


def _require(folder: Path, *names: str) -> None:
    for name in names:
        if not (folder / name).is_file():
            raise CheckpointError(f"{folder} is not a checkpoint: {name} is missing")


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Load and verify a checkpoint directory (or "default", the shipped one). Raises
    CheckpointError for a missing file, weights that do not match `model_version`, or a
    checkpoint an earlier version wrote (`unreadable`, `tokenizer.outdated`)."""
    folder = resolve(path)
    _require(folder, WEIGHTS, CONFIG, TOKENIZER)
    config = json.loads((folder / CONFIG).read_text())
    actual = file_hash(folder / WEIGHTS)
    if actual != config.get("model_version"):
        raise CheckpointError(
            f"{folder / WEIGHTS} hashes to {actual} but config.json says model_version "
            f"{config.get('model_version')}: refusing a modified or corrupt checkpoint")
    problems = unreadable(config)
    try:
        tokenizer = ClaimTokenizer.load(folder / TOKENIZER)
    except ValueError as e:
        problems.append(str(e))
    if problems:
        raise CheckpointError(
            f"{folder} was written by another version of ClaimScope, which this one cannot "
            f"read ({'; '.join(problems)}): train a new checkpoint (`claimscope train`)")
    _require(folder, METRICS, CHECKS)  # last: an earlier version's lacks are said above
    model = ClaimFormer(ClaimFormerConfig(**config["model"]))
    model.load_state_dict(load_file(folder / WEIGHTS))
    model.to(device).eval()
    return Checkpoint(model, tokenizer,
                      Calibration(**{k: tuple(v) if isinstance(v, list) else v
                                     for k, v in config["calibration"].items()}),
                      actual, folder, json.loads((folder / METRICS).read_text()),
                      config.get("training", {}), CheckLimits.load(folder / CHECKS))
