"""Terminal rendering of one claim's explanation (`claimscope explain`)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from model.claims import Claim
from model.explain import describe
from model.scorer import Scorer


def render(scorer: Scorer, claim: Claim, console: Console) -> None:
    s, enc, raw = scorer.inspect(claim)
    verdict = "[red]FLAGGED[/red]" if s.flagged else "[green]not flagged[/green]"
    console.print(f"claim [bold]{claim.claim_id}[/bold]: score {s.score:.3f} "
                  f"(threshold {s.threshold:.3f}) {verdict}")
    console.print(f"  fraud head {s.components.fraud_probability:.3f}, "
                  f"anomaly {s.components.anomaly:.3f}, model {s.model_version}")
    if s.flagged_by:
        console.print(f"  flagged by: {', '.join(s.flagged_by)}")
    console.print(f"  reason: {s.explanation.reason}", markup=False)
    if s.explanation.edits:
        edits = Table(title="payer edits the claim breaks (CMS tables)", title_justify="left")
        for col in ("edit", "codes", "what the rule says", "table"):
            edits.add_column(col)
        for e in s.explanation.edits:
            edits.add_row(e.edit, "/".join(e.codes), escape(e.detail), escape(e.table_version))
        console.print(edits)
    if s.explanation.explained:
        what = "what decided" if s.flagged else "not flagged; what raises the score most"
        top = Table(title=f"{what} ({s.explanation.explained}): the fall of its logit "
                          "without each token", title_justify="left")
        for col in ("token", "field", "fall"):
            top.add_column(col)
        for t in s.explanation.top_tokens:
            top.add_row(t.token, t.field, f"{t.attribution:.2f}")
        console.print(top)

    pairs = Table(title="each deciding token and the token it attends to most",
                  title_justify="left")
    for col in ("token", "attends to", "layer", "head", "weight"):
        pairs.add_column(col)
    for p in s.explanation.top_pairs:
        pairs.add_row(p.query, p.key, str(p.layer), str(p.head), f"{p.weight:.2f}")
    console.print(pairs)

    fields = Table(title="field importance (the deciding tokens' falls, per field)",
                   title_justify="left")
    fields.add_column("field")
    fields.add_column("share")
    fields.add_column("")
    for name, w in s.explanation.field_importance.items():
        fields.add_row(name, f"{w:.1%}", "█" * round(w * 40))
    console.print(fields)

    p_odd = raw.replaced_probability[0]
    tokens = Table(title="tokens (surprise = how unlikely the token is, given the others)",
                   title_justify="left")
    for col in ("#", "field", "token", "surprise"):
        tokens.add_column(col)
    for i, t in enumerate(enc.tokens[0][1:], 1):
        style = "bold red" if p_odd[i] > 0.5 else None
        tokens.add_row(str(i), t.field, describe(t, scorer.vocab), f"{p_odd[i]:.0%}", style=style)
    console.print(tokens)
    if enc.truncated[0]:
        console.print("  note: the claim was longer than the model reads; later lines were "
                      "left out")
