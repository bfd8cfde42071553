"""Model commands: train, evaluate, score, explain, report (torch imported inside each)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console

from model.claims import describe_errors, parse_claim
from model.generator import PATTERNS
from stream.cli.common import app, claim_id_of, err, fail, open_input

Checkpoint = Annotated[str, typer.Option("--checkpoint", help='checkpoint dir, or "default"')]
Device = Annotated[str, typer.Option(help="cpu, cuda or auto (CUDA when present)")]


def _log(message: str) -> None:
    err.print(message, highlight=False, markup=False)


def _load_scorer(checkpoint: str, device: str, **kwargs):
    from model.checkpoint import CheckpointError
    from model.scorer import Scorer

    try:
        return Scorer.load(checkpoint, device=device, **kwargs)
    except (CheckpointError, ValueError) as e:
        raise fail(str(e)) from None


@app.command()
def train(
    out: Annotated[Path, typer.Option(help="checkpoint directory to write")] = Path(
        "runs/claimformer"),
    preset: Annotated[str, typer.Option(help="default (4 heads, 2 layers, d 128) or "
                                        "production (8/4/256)")] = "default",
    steps: Annotated[int, typer.Option(min=1, help="optimizer steps (early stopping may end "
                                       "sooner)")] = 2500,
    train_count: Annotated[int, typer.Option(min=1000, help="labelled training claims")] = 60_000,
    seed: Annotated[int, typer.Option(help="fixes data, init and batches")] = 1234,
    holdout_pattern: Annotated[str | None, typer.Option(help="leave this fraud pattern out")]
    = None,
) -> None:
    """Train a ClaimFormer on generated claims and write a checkpoint directory."""
    from model.checkpoint import save_checkpoint
    from model.training import TrainConfig
    from model.training import train as run_training
    from model.transformer import PRESETS

    if preset not in PRESETS:
        raise fail(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    if holdout_pattern is not None and holdout_pattern not in PATTERNS:
        raise fail(f"unknown pattern {holdout_pattern!r}; known: {', '.join(PATTERNS)}")
    cfg = TrainConfig(preset=preset, steps=steps, train_count=train_count, seed=seed,
                      holdout_pattern=holdout_pattern)
    ck = run_training(cfg, log=_log)
    version = save_checkpoint(ck, out)
    err.print(f"wrote {out} (model_version {version})", highlight=False)


@app.command(name="eval")
def evaluate(
    checkpoint: Checkpoint = "default",
    count: Annotated[int, typer.Option(min=200, help="fresh labelled claims")] = 20_000,
    seed: Annotated[int, typer.Option(help="seed of the fresh claims")] = 11,
    fraud_rate: Annotated[float, typer.Option(min=0.001, max=0.9)] = 0.05,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    holdout_pattern: Annotated[str | None, typer.Option(
        help="train a model without this pattern, then measure its anomaly score on it")]
    = None,
    holdout_steps: Annotated[int, typer.Option(help="training steps for --holdout-pattern")]
    = 1500,
    device: Device = "cpu",
) -> None:
    """Measure a checkpoint against IsolationForest and gradient boosting on fresh claims."""
    from model.evaluate import evaluate as run_eval
    from model.evaluate import novelty

    if holdout_pattern is not None:
        if holdout_pattern not in PATTERNS:
            raise fail(f"unknown pattern {holdout_pattern!r}; known: {', '.join(PATTERNS)}")
        result = novelty(holdout_pattern, count, seed, holdout_steps, log=_log)
    else:
        scorer = _load_scorer(checkpoint, device)  # clear error before the long work
        result = run_eval(scorer, count, seed, fraud_rate, log=_log)
    print(json.dumps(result, indent=2) if as_json else _eval_table(result))


def _eval_table(r: dict) -> str:
    if "novelty" in r:
        n = r["novelty"]
        return (f"held-out pattern {n['pattern']}: anomaly AUROC {n['anomaly_auroc']:.3f} "
                f"(fraud head {n['fraud_head_auroc']:.3f}, combined {n['combined_auroc']:.3f})")
    rows = [("ClaimFormer", r["model"])] + [(k, v) for k, v in r["baselines"].items()]
    lines = [f"{'method':<20}{'AUROC':>8}{'PR-AUC':>8}{'R@1%FPR':>9}"]
    lines += [f"{n:<20}{m['auroc']:>8.3f}{m['pr_auc']:>8.3f}{m['recall_at_1pct_fpr']:>9.3f}"
              for n, m in rows]
    x = r["explanations"]
    lines.append(f"explanations: top-3 hit rate {x['top3_hit_rate']}, "
                 f"faithfulness {x['faithfulness_rate']}")
    return "\n".join(lines)


@app.command()
def score(
    path: Annotated[str, typer.Argument(help="JSONL claims, or - for stdin")] = "-",
    checkpoint: Checkpoint = "default",
    device: Device = "auto",
) -> None:
    """Score claims: one Score JSON per line on stdout; invalid claims reported on stderr."""
    from model.checks import CrossClaimChecks, MemoryState

    scorer = _load_scorer(checkpoint, device, checks=CrossClaimChecks(MemoryState()))
    bad = 0
    batch: list = []
    with open_input(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                batch.append(parse_claim(line.encode("utf-8", errors="surrogateescape")))
            except ValidationError as e:
                bad += 1
                err.print(f"line {lineno}{claim_id_of(line)}: " + "; ".join(describe_errors(e)),
                          highlight=False, markup=False)
            if len(batch) >= 1024:
                _write_scores(scorer, batch)
        _write_scores(scorer, batch)
    raise typer.Exit(1 if bad else 0)


def _write_scores(scorer, batch: list) -> None:
    for s in scorer.score(batch):
        sys.stdout.write(s.model_dump_json() + "\n")
    batch.clear()


@app.command()
def explain(
    path: Annotated[str, typer.Argument(help="one claim as JSON (file or -)")],
    checkpoint: Checkpoint = "default",
    device: Device = "cpu",
) -> None:
    """Print a readable explanation of one claim's score."""
    from model.explain_view import render

    with open_input(path) as f:
        raw = f.read()
    try:
        claim = parse_claim(raw.encode("utf-8", errors="surrogateescape"))
    except ValidationError as e:
        raise fail("invalid claim: " + "; ".join(describe_errors(e)), 1) from None
    scorer = _load_scorer(checkpoint, device, explain="all")
    render(scorer, claim, Console())


@app.command()
def report(
    checkpoint: Annotated[str, typer.Argument(help='checkpoint dir, or "default"')] = "default",
    out: Annotated[Path, typer.Option(help="folder for report.json and PNGs")] = Path("report"),
) -> None:
    """Write training curves and per-head attention heat maps (JSON + PNG)."""
    from model.checkpoint import CheckpointError
    from model.report import write_report

    try:
        files = write_report(checkpoint, out)
    except (CheckpointError, ValueError) as e:
        raise fail(str(e)) from None
    err.print(f"wrote {len(files)} files to {out}", highlight=False)


@app.command()
def sweep(
    steps: Annotated[int, typer.Option(min=1, help="training steps per architecture")] = 1500,
    train_count: Annotated[int, typer.Option(min=1000)] = 30_000,
    count: Annotated[int, typer.Option(min=200, help="fresh evaluation claims")] = 10_000,
    seed: Annotated[int, typer.Option()] = 11,
    device: Device = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Train 1/2, 2/4, 4/8 and 6/8 (layers/heads) the same way; compare accuracy and speed."""
    from model.scorer import resolve_device
    from model.sweep import sweep as run_sweep

    try:
        dev = str(resolve_device(device))
    except ValueError as e:
        raise fail(str(e)) from None
    result = run_sweep(steps, train_count, count, seed, dev, log=_log)
    if as_json:
        print(json.dumps(result, indent=2))
        return
    print(f"{'layers':>6}{'heads':>6}{'params':>10}{'AUROC':>8}{'PR-AUC':>8}{'acc':>7}"
          f"{'bal.acc':>8}{'claims/s':>10}")
    for r in result["architectures"]:
        print(f"{r['layers']:>6}{r['heads']:>6}{r['params']:>10,}{r['auroc']:>8.3f}"
              f"{r['pr_auc']:>8.3f}{r['accuracy']:>7.3f}{r['balanced_accuracy']:>8.3f}"
              f"{r['cpu_claims_per_s']:>10,.0f}")
