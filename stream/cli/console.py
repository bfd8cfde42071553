"""`claimscope console`: the investigator web console (docs/console.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from stream.cli.common import app, err, fail
from stream.cli.service import Config, one_line_errors, settings_from


@app.command()
def console(
    port: Annotated[int, typer.Option(help="port to listen on; 0 = a free one", min=0,
                                      max=65535)] = 8000,
    host: Annotated[str, typer.Option(
        help="address to bind; ignored (127.0.0.1) unless CLAIMSCOPE_CONSOLE_TOKEN is set, "
        "so an unguarded console is never reachable from other machines")] = "127.0.0.1",
    config: Config = None,
) -> None:
    """Serve the investigator console: flagged queue, claim pages, feedback, JSON API.

    Every route needs the token from CLAIMSCOPE_CONSOLE_TOKEN (Bearer header, or ?token=
    once in a browser for a session cookie). Ctrl-C or SIGTERM stops it.
    """
    from stream.console.server import ConsoleServer

    settings = settings_from(config)
    with one_line_errors():
        server = ConsoleServer(settings, host=host, port=port)
        typer.echo(server.banner())
        server.run()



@app.command()
def retrain(
    feedback: Annotated[bool, typer.Option(
        "--feedback", help="fine-tune on the investigators' labels stored by the console")]
    = False,
    checkpoint: Annotated[str, typer.Option(help='checkpoint to start from, or "default"')]
    = "default",
    out: Annotated[Path, typer.Option(help="directory for the new checkpoint")] = Path(
        "runs/claimformer-retrained"),
    steps: Annotated[int, typer.Option(min=1, help="fine-tuning steps")] = 300,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    config: Config = None,
) -> None:
    """Fine-tune a checkpoint on console feedback mixed into generated claims; write a new
    checkpoint (new model_version) and report before/after on the feedback and on fresh
    claims. Roll it out with CLAIMSCOPE_CHECKPOINT=<out> and a worker restart."""
    from model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
    from model.retrain import RetrainConfig
    from model.retrain import retrain as run_retrain

    if not feedback:
        raise fail("say what to retrain on: --feedback (the labels investigators gave in the "
                   "console)")
    settings = settings_from(config)
    with one_line_errors():
        claims, labels, skipped = load_feedback(settings)
    if not claims:
        raise fail(f"no usable feedback in Redis (key prefix {settings.key_prefix!r}: "
                   f"{skipped} labels without a valid claim)", 1)
    try:
        ck = load_checkpoint(checkpoint)
    except CheckpointError as e:
        raise fail(str(e)) from None
    new, report = run_retrain(ck, claims, labels, RetrainConfig(steps=steps),
                              log=lambda m: err.print(m, highlight=False, markup=False))
    version = save_checkpoint(new, out)
    if as_json:
        print(json.dumps({**report.to_json(), "model_version": version, "checkpoint": str(out),
                          "skipped_feedback": skipped}, indent=2))
        return
    b, a = report.before, report.after
    print(f"retrained {report.from_version} -> {version} on {report.feedback} labels "
          f"({report.feedback_fraud} fraud); wrote {out}")
    print(f"  feedback agreement  {b.feedback.agreement:.3f} -> {a.feedback.agreement:.3f}")
    print(f"  fresh claims AUROC  {b.fresh.auroc:.3f} -> {a.fresh.auroc:.3f}, "
          f"PR-AUC {b.fresh.pr_auc:.3f} -> {a.fresh.pr_auc:.3f}")


def load_feedback(settings) -> tuple[list, list[bool], int]:
    """(claims, is_fraud, skipped) from the console's feedback labels in the store."""
    from pydantic import ValidationError

    from model.claims import Claim
    from stream.feedback import Feedback
    from stream.store import ScoreStore

    store = ScoreStore.from_settings(settings)
    claims, labels, skipped = [], [], 0
    try:
        for raw in store.all_feedback():
            try:
                fb = Feedback.model_validate_json(raw)
                claims.append(Claim.model_validate(fb.claim))
                labels.append(fb.label == "fraud")
            except (ValidationError, TypeError, ValueError):
                skipped += 1
    finally:
        store.close()
    return claims, labels, skipped
