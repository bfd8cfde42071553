"""Model commands: train, evaluate, score, explain, report (torch imported inside each)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError
from rich.console import Console

from model.claims import describe_errors, parse_claim
from model.generator import CROSS_CLAIM_PATTERNS, PATTERNS
from stream.cli.common import app, err, fail, open_input
from stream.cli.data import FormatOption, ReferencesOption, claims_in

if TYPE_CHECKING:
    from model.quality.results import EvalResult, Interval

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


BAD_LINES_SHOWN = 20  # bad lines printed; all go to the checkpoint's bad_lines.txt


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
    claims: Annotated[Path | None, typer.Option(
        help="train on your own claims: contract JSONL in arrival order (default: the "
        "generator)")] = None,
    labels: Annotated[Path | None, typer.Option(
        help='labels for some of --claims: JSONL of {"claim_id", "fraud": true|false, '
        '"pattern": optional}')] = None,
    blank_rate: Annotated[float, typer.Option(
        min=0.0, max=0.5, help="per header field (age, sex, specialty), per line's code "
        "and per line's charge: the share of training claims read with it unknown")] = 0.1,
) -> None:
    """Train a ClaimFormer and write a checkpoint directory: on generated claims, or on
    yours (--claims, --labels: self-supervised on every claim, supervised on the labelled
    ones, measured on a held-out slice of them)."""
    from model.checkpoint import save_checkpoint
    from model.training import TrainConfig
    from model.training import train as run_training
    from model.transformer import PRESETS

    if preset not in PRESETS:
        raise fail(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    if holdout_pattern is not None and holdout_pattern not in PATTERNS:
        raise fail(f"unknown pattern {holdout_pattern!r}; known: {', '.join(PATTERNS)}")
    if labels is not None and claims is None:
        raise fail("--labels needs --claims (the claims they label)")
    cfg = TrainConfig(preset=preset, steps=steps, train_count=train_count, seed=seed,
                      holdout_pattern=holdout_pattern, blank_rate=blank_rate)
    data, bad = (_history(claims, labels) if claims is not None else (None, []))
    ck = run_training(cfg, log=_log, data=data)
    version = save_checkpoint(ck, out)
    if bad:
        (out / "bad_lines.txt").write_text("\n".join(bad) + "\n")
    err.print(f"wrote {out} (model_version {version})", highlight=False)


def _history(claims: Path, labels: Path | None):  # -> (model.training.TrainingData, errors)
    """Read a user's history, print its bad lines and coverage; fail if nothing is usable."""
    from model.history import HistoryError, coverage_lines, history_data, read_history
    from model.tokenizer import ClaimTokenizer
    from model.vocabulary import default_vocabulary

    try:
        h = read_history(claims, labels)
        data = history_data(h, ClaimTokenizer.from_vocabulary(default_vocabulary()))
    except HistoryError as e:
        raise fail(str(e)) from None
    for line in h.errors[:BAD_LINES_SHOWN]:
        err.print(f"skipped {line}", highlight=False, markup=False)
    if len(h.errors) > BAD_LINES_SHOWN:
        err.print(f"... and {len(h.errors) - BAD_LINES_SHOWN:,} more bad lines (all of them in "
                  f"the checkpoint's bad_lines.txt)", highlight=False)
    s = data.source
    err.print(f"history: {s['claims']:,} claims, {s['labelled']:,} labelled "
              f"({s['labelled_fraud']:,} fraud), {len(h.errors):,} bad line"
              f"{'' if len(h.errors) == 1 else 's'} skipped; held out "
              f"{len(data.val):,} labelled for validation, {len(data.cal):,} for calibration",
              highlight=False)
    for line in coverage_lines(s["coverage"]):
        err.print(f"coverage: {line}", highlight=False)
    return data, h.errors


@app.command(name="eval")
def evaluate(
    checkpoint: Checkpoint = "default",
    count: Annotated[int | None, typer.Option(min=1000, help="fresh test claims (default: "
                                              "100,000, the yardstick; 80,000 with "
                                              "--providers)")] = None,
    seed: Annotated[int | None, typer.Option(help="seed of the test claims, never a training "
                                             "seed (default 11; 2029 with --providers)")] = None,
    fraud_rate: Annotated[float, typer.Option(min=0.001, max=0.9)] = 0.05,
    bootstrap: Annotated[int | None, typer.Option(min=10, help="bootstrap resamples behind "
                                                  "each 95% interval (default 200; 1,000 "
                                                  "with --providers)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="print markdown tables")]
    = False,
    novelty: Annotated[str | None, typer.Option(
        help="comma-separated single-claim patterns, or all: train a model without each, "
        "then measure its anomaly channel on it (minutes per pattern)")] = None,
    novelty_steps: Annotated[int, typer.Option(min=10, help="training steps per novelty "
                                               "model")] = 1500,
    device: Device = "cpu",
    providers: Annotated[bool, typer.Option(
        "--providers", help="the provider yardstick instead: a world of schemers and honest "
        "outliers (--count claims, default 80,000; --seed, default 2029), providers ranked "
        "by risk against peers, against the flagged-share baseline")] = False,
) -> None:
    """Measure a checkpoint on the yardstick: every method on the same fresh claims, with
    95% intervals, artefact probe, invariance, explanations (ERASER) and head ablation; or,
    with --providers, whom the provider risk ranks first."""
    if providers:
        if markdown or novelty is not None:
            raise fail("--providers prints a table or --json; --markdown and --novelty are "
                       "for the claim yardstick")
        _provider_eval(checkpoint, device, count or 80_000, 2029 if seed is None else seed,
                       fraud_rate, bootstrap or 1_000, as_json)
        return
    count, seed, bootstrap = count or 100_000, 11 if seed is None else seed, bootstrap or 200
    from model.generator import SINGLE_CLAIM_PATTERNS
    from model.quality.evaluate import EvalError
    from model.quality.evaluate import evaluate as run_eval
    from model.quality.evaluate import novelty as run_novelty

    held: list[str] = []
    if novelty is not None:
        held = list(SINGLE_CLAIM_PATTERNS) if novelty == "all" else [
            p.strip() for p in novelty.split(",") if p.strip()]
        unknown = [p for p in held if p not in SINGLE_CLAIM_PATTERNS]
        if unknown or not held:
            raise fail(f"--novelty takes single-claim patterns or all; unknown: "
                       f"{', '.join(unknown) or '(none given)'}; known: "
                       f"{', '.join(SINGLE_CLAIM_PATTERNS)}")
    scorer = _load_scorer(checkpoint, device)  # clear error before the long work
    try:
        result = run_eval(scorer, count, seed, fraud_rate, bootstrap, log=_log)
    except EvalError as e:
        raise fail(str(e)) from None
    if held:
        result.novelty = run_novelty(held, min(count, 20_000), seed, novelty_steps, log=_log)
    if as_json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(eval_markdown(result) if markdown else eval_table(result))


def _provider_eval(checkpoint: str, device: str, count: int, seed: int, fraud_rate: float,
                   bootstrap: int, as_json: bool) -> None:
    """`eval --providers`: the provider yardstick, printed or as {"providers": ...}."""
    from model.checks import MemoryState
    from model.quality.providers import evaluate_providers

    scorer = _load_scorer(checkpoint, device, check_state=MemoryState())
    train_seed = scorer.ck.training.get("seed")
    if train_seed is not None and train_seed - 1 <= seed <= train_seed + 3:
        raise fail(f"seed {seed} or the second world's {seed + 1} is one of the checkpoint's "
                   f"training seeds ({train_seed}-{train_seed + 3}): pick another")
    out = evaluate_providers(scorer, count, seed, fraud_rate, bootstrap, log=_log)
    if as_json:
        print(json.dumps({"providers": out.to_json()}, indent=2))
        return
    for name, f in (("provider risk", out.figures),
                    ("flagged share (baseline)", out.baseline.figures)):
        print(f"{name:26} AUROC {f.auroc:.3f} {f.auroc_ci95}  precision@20 "
              f"{f.precision_at_20:.2f} {f.precision_at_20_ci95}  honest outliers in "
              f"top 20: {f.honest_outliers_in_top20}")
    print(f"{'chance':26} AUROC {out.chance.auroc:.3f}  precision@20 "
          f"{out.chance.precision_at_20:.2f}")


def _ci(m: Interval) -> str:
    return f"{m.value:.3f} [{m.ci95[0]:.3f}, {m.ci95[1]:.3f}]"


def eval_table(r: EvalResult) -> str:
    """The headline: one line per method, values with 95% intervals."""
    lines = [f"{r.count:,} claims, seed {r.seed}, fraud rate {r.fraud_rate} "
             f"(chance: AUROC 0.5, PR-AUC {r.chance.pr_auc}, recall 0.01)",
             f"{'method':<18}{'AUROC':>24}{'PR-AUC':>24}{'recall@1%FPR':>24}"]
    for name, m in r.methods.items():
        lines.append(f"{name:<18}{_ci(m.auroc):>24}{_ci(m.pr_auc):>24}"
                     f"{_ci(m.recall_at_1pct_fpr):>24}")
    x, inv, held = r.explanations, r.invariance, r.heldout
    for probe, aurocs in (("artefact", r.probes.artefact), ("identity", r.probes.identity)):
        single = [v for p, v in aurocs.items() if p not in CROSS_CLAIM_PATTERNS]
        top = f"{max(single):.3f}" if single else "none measured (too few claims)"
        lines.append(f"{probe} probe, highest of the single-claim patterns: {top} "
                     f"(at most 0.65 wanted)")
    lines.append(f"codes only fraud claims carry: {len(r.probes.fraud_only_codes)}")
    ev = r.everyday
    lines.append(f"everyday care ({ev.kinds} kinds, {ev.claims} claims): "
                 f"{ev.clean_flag_rate:.1%} flagged; " + "; ".join(
                     f"{k} AUROC {m.auroc:.3f}, first token names it {m.named_top1:.0%}"
                     for k, m in ev.mutations.items()) + "; read with unknowns: " + ", ".join(
                     f"{k} {u.flag_rate:.1%} ({u.ratio}x)" for k, u in ev.read_unknown.items()))
    by_field = ", ".join(f"{f} {v}" for f, v in held.heldout_code_fpr.items())
    lines.append(f"clean FPR, claims with only seen codes {held.seen_code_fpr}; with "
                 f"held-out codes: {by_field}")
    sib, unl = inv.oov_sibling, inv.unlisted_procedure
    lines.append(f"permutation: {inv.permutation_flag_rate_change:.4f} of decisions change; "
                 f"clean FPR {sib.listed_fpr:.4f}, with unlisted siblings {sib.fpr:.4f}; "
                 f"{unl.listed_fpr:.4f}, with unlisted procedure codes {unl.fpr:.4f}")
    for name, c in r.checks.checks.items():
        flat = r.checks_flat.checks[name]
        lines.append(f"{name}: recall {c.recall}, clean FPR {c.clean_fpr}, frequent-care"
                     f" FPR {c.frequent_care_fpr} (flat limits: {flat.recall}, "
                     f"{flat.clean_fpr}, {flat.frequent_care_fpr})")
    a = r.anomaly_channel
    lines.append(f"anomaly channel at a {a.fpr_budget} budget: clean FPR {a.clean_fpr}, "
                 f"recall {a.recall}, {a.fraud_only_it_flags} fraud claims only it flags")
    lines.append(f"explanations: comprehensiveness k3 {x.comprehensiveness.get('k3')} "
                 f"(random {x.random_comprehensiveness.get('k3')}), sufficiency k3 "
                 f"{x.sufficiency.get('k3')} (random {x.random_sufficiency.get('k3')}), "
                 f"top-3 hit {x.top3_hit} (chance {x.top3_chance})")
    e = r.edits
    lines.append(f"payer edits alone: recall {e.edits.recall}, precision {e.edits.precision}, "
                 f"clean FPR {e.edits.clean_fpr}; model alone: recall {e.model.recall}, "
                 f"precision {e.model.precision}; either: recall {e.either.recall}, precision "
                 f"{e.either.precision}, clean FPR {e.either.clean_fpr}")
    if (p := r.parity) is not None:
        lines.append(f"{p.precision} path against fp32 eager: {p.changed} of {p.claims:,} "
                     f"decisions differ ({p.share_changed:.3%}), scores by at most "
                     f"{p.max_score_diff} (mean {p.mean_score_diff})")
    return "\n".join(line for line in lines if line)


def eval_markdown(r: EvalResult) -> str:
    """Markdown tables of the same figures, as docs/model.md shows them."""
    out = [f"Test set: {r.count:,} claims, seed {r.seed}, fraud rate {r.fraud_rate}; "
           f"model {r.model_version}; chance: AUROC 0.5, PR-AUC {r.chance.pr_auc}, "
           f"recall at 1% FPR 0.01.", "",
           "| method | AUROC | PR-AUC | recall at 1% FPR | single-claim PR-AUC |",
           "|---|---|---|---|---|"]
    for name, m in r.methods.items():
        out.append(f"| {name} | {_ci(m.auroc)} | {_ci(m.pr_auc)} | "
                   f"{_ci(m.recall_at_1pct_fpr)} | {r.single_claim[name].pr_auc:.3f} |")
    names = list(r.methods)
    out += ["", "Recall at 1% FPR per pattern (n = fraud claims of it):", "",
            "| pattern | n | " + " | ".join(names) + " | artefact probe | identity probe |",
            "|---|---|" + "---|" * len(names) + "---|---|"]
    for p, row in r.methods["claimformer"].per_pattern.items():
        cells = [f"{r.methods[n].per_pattern[p].recall_at_1pct_fpr:.3f}" for n in names]
        probes = [aurocs.get(p) if ":" not in p else None  # none per mismatch variant
                  for aurocs in (r.probes.artefact, r.probes.identity)]
        out.append(f"| {p} | {row.n} | " + " | ".join(cells) + " | " +
                   " | ".join("" if x is None else str(x) for x in probes) + " |")
    inv, held, x = r.invariance, r.heldout, r.explanations
    sib, unl = inv.oov_sibling, inv.unlisted_procedure
    out += ["", "| invariance | value |", "|---|---|",
            f"| decisions changed by shuffling diagnoses and lines | "
            f"{inv.permutation_flag_rate_change:.4f} ({inv.permutation_claims:,} claims) |",
            f"| clean FPR, listed diagnoses | {sib.listed_fpr:.4f} |",
            f"| clean FPR, same claims with unlisted siblings | {sib.fpr:.4f} "
            f"({sib.claims:,} claims) |",
            f"| clean FPR, listed procedure codes | {unl.listed_fpr:.4f} |",
            f"| clean FPR, same claims with unlisted codes of their CPT/HCPCS ranges | "
            f"{unl.fpr:.4f} (anomaly channel {unl.anomaly_fpr:.4f}; "
            f"{unl.claims:,} claims) |",
            f"| clean FPR, claims carrying no code training held out | "
            f"{held.seen_code_fpr} ({held.seen_code_claims:,} claims) |",
            *(f"| clean FPR, claims carrying a held-out {f} code | {v} "
              f"({held.heldout_code_claims[f]:,} claims) |"
              for f, v in held.heldout_code_fpr.items()),
            "", "| check | limits | recall | clean FPR | frequent-care FPR |",
            "|---|---|---|---|---|"]
    for name in r.checks.checks:
        for label, c in (("learned", r.checks.checks[name]), ("flat", r.checks_flat.checks[name])):
            out.append(f"| {name} | {label} | {c.recall} | {c.clean_fpr} | "
                       f"{c.frequent_care_fpr} ({c.frequent_care_claims:,} claims) |")
    a = r.anomaly_channel
    out += ["", f"Anomaly channel on its own at a {a.fpr_budget} false-positive budget "
            f"(cut {a.cut}): clean FPR {a.clean_fpr}, recall {a.recall}, "
            f"{a.fraud_only_it_flags} fraud claims that only it flags; recall per pattern: "
            + ", ".join(f"{p} {v}" for p, v in a.per_pattern.items()) + "."]
    ev = r.everyday
    out += ["", f"Everyday care, {ev.kinds} hand-written kinds x {ev.claims // ev.kinds}"
            f" claims: {ev.clean_flag_rate:.1%} of clean claims flagged (95% interval "
            f"{ev.clean_flag_rate_ci95[0]:.1%} to {ev.clean_flag_rate_ci95[1]:.1%}).", "",
            "| mutation | claims | AUROC vs the same claims clean | flagged | first token "
            "names the change |", "|---|---|---|---|---|"]
    out += [f"| {k} | {m.claims} | {m.auroc:.3f} | {m.flag_rate} | "
            f"{m.named_top1:.0%} of {m.named_claims} |" for k, m in ev.mutations.items()]
    out += ["", "| read as unknown | clean claims flagged | 95% interval | vs read in full |",
            "|---|---|---|---|"]
    out += [f"| {k} | {u.flag_rate:.1%} | {u.flag_rate_ci95[0]:.1%} to "
            f"{u.flag_rate_ci95[1]:.1%} | {u.ratio}x |" for k, u in ev.read_unknown.items()]
    out += ["", "| explanations (ERASER) | k=1 | k=3 | k=5 |", "|---|---|---|---|"]
    for name, by_k in (("comprehensiveness", x.comprehensiveness),
                       ("random_comprehensiveness", x.random_comprehensiveness),
                       ("sufficiency", x.sufficiency),
                       ("random_sufficiency", x.random_sufficiency)):
        out.append(f"| {name.replace('_', ' ')} | " + " | ".join(
            str(by_k.get(f"k{k}")) for k in (1, 3, 5)) + " |")
    columns = [*next(iter(r.heads.values())).auroc_change, "specialisation"]
    out += ["", f"Top-3 hit on {x.top3_claims:,} mismatch claims: {x.top3_hit} "
            f"(chance {x.top3_chance}).", "",
            "| head | " + " | ".join(columns) + " |",
            "|---|" + "---|" * len(columns)]
    for h, ablated in r.heads.items():
        out.append(f"| {h} | " + " | ".join(
            str(v) for v in [*ablated.auroc_change.values(), ablated.specialisation]) + " |")
    e = r.edits
    out += ["", "Payer edits alone, the model alone (fraud and anomaly channels, no checks) and "
            "either, per pattern against the clean claims: recall / precision.", "",
            "| pattern | edits | model | either |", "|---|---|---|---|"]
    out += [f"| {p} | " + " | ".join(f"{w.per_pattern[p]} / {w.per_pattern_precision[p]}"
                                     for w in (e.edits, e.model, e.either)) + " |"
            for p in e.edits.per_pattern]
    out.append(f"| all | {e.edits.recall} / {e.edits.precision} | {e.model.recall} / "
               f"{e.model.precision} | {e.either.recall} / {e.either.precision} |")
    if r.novelty is not None:
        out += ["", "| held out | n | anomaly AUROC | recall at 1% FPR |", "|---|---|---|---|"]
        out += [f"| {p} | {v.n} | {v.auroc:.3f} | {v.recall_at_1pct_fpr:.3f} |"
                for p, v in r.novelty.items()]
    return "\n".join(out)


@app.command()
def score(
    path: Annotated[str, typer.Argument(help="claims file, or - for stdin")] = "-",
    checkpoint: Checkpoint = "default",
    device: Device = "auto",
    fmt: FormatOption = "claim",
    references: ReferencesOption = None,
) -> None:
    """Score claims: one Score JSON per line on stdout; invalid claims reported on stderr."""
    from model.checks import MemoryState
    from model.formats import ConversionError

    bad = 0
    batch: list = []
    with claims_in(fmt, path, references) as items:  # a bad references file: before the model
        scorer = _load_scorer(checkpoint, device, check_state=MemoryState())
        for item in items:
            if isinstance(item, ConversionError):
                bad += 1
                err.print(str(item), highlight=False, markup=False, soft_wrap=True)
                continue
            batch.append(item)
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
        claim = parse_claim(raw)
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
    from model.quality.report import write_report

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
    from model.quality.sweep import sweep as run_sweep
    from model.scorer import resolve_device

    try:
        dev = str(resolve_device(device))
    except ValueError as e:
        raise fail(str(e)) from None
    result = run_sweep(steps, train_count, count, seed, dev, log=_log)
    if as_json:
        print(json.dumps(result.to_json(), indent=2))
        return
    print(f"{'layers':>6}{'heads':>6}{'params':>10}{'AUROC':>8}{'PR-AUC':>8}{'acc':>7}"
          f"{'bal.acc':>8}{'claims/s':>10}")
    for r in result.architectures:
        print(f"{r.layers:>6}{r.heads:>6}{r.params:>10,}{r.auroc:>8.3f}"
              f"{r.pr_auc:>8.3f}{r.accuracy:>7.3f}{r.balanced_accuracy:>8.3f}"
              f"{r.cpu_claims_per_s:>10,.0f}")
