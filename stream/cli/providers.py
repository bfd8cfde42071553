"""`claimscope providers`: whom to investigate first, from the workers' latest ranking.

The ranking is the leader worker's (`stream.ranking.Ranking`, every `provider_risk_s` at most);
these commands read it from Redis and never rank themselves, so what they print is what the
console and the `providers.risk` topic say.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from stream.cli.common import app, err
from stream.cli.service import AsJson, Config, one_line_errors, settings_from

providers_app = typer.Typer(help="Providers ranked by risk against their specialty peers.",
                            no_args_is_help=True)
app.add_typer(providers_app, name="providers")


def _profiles(config: Path | None):
    from stream.preflight import check_redis
    from stream.profiles import ProfileStore

    settings = settings_from(config)
    with one_line_errors():
        check_redis(settings)
    return ProfileStore.from_settings(settings)


@providers_app.command("top")
def top(n: Annotated[int, typer.Option("--n", min=1, help="how many")] = 20,
        specialty: Annotated[str | None, typer.Option(help="only this specialty")] = None,
        as_json: AsJson = False, config: Config = None) -> None:
    """The providers of highest risk, each with its reasons; exit 1 when nothing is ranked
    yet (no worker has ranked, or no provider stands out)."""
    store = _profiles(config)
    with one_line_errors():
        ranked = store.top(n, specialty)
    if as_json:
        print(json.dumps({"providers": [r.model_dump(mode="json", exclude={"measures"})
                                        for r in ranked]}, indent=2))
    if not ranked:
        err.print("no provider ranked" + (f" in {specialty}" if specialty else "") +
                  " (is a worker running with provider_profiles on?)", highlight=False)
        raise typer.Exit(1)
    if as_json:
        return
    table = Table("provider", "specialty", "risk", "claims", "reasons",
                  title=f"top {len(ranked)} by risk against peers", title_justify="left")
    for r in ranked:
        table.add_row(r.provider_id, f"{r.specialty} ({r.place_of_service})", f"{r.risk:.1f}",
                      f"{r.claims:.0f}", "\n".join(r.reasons) or "-")
    Console().print(table)


@providers_app.command("show")
def show(provider_id: Annotated[str, typer.Argument(help="provider id")],
         as_json: AsJson = False, config: Config = None) -> None:
    """One provider's risk: every measure against its peers; exit 1 if it is not ranked."""
    store = _profiles(config)
    with one_line_errors():
        r = store.risk(provider_id)
    if r is None:
        err.print(f"provider {provider_id} is not ranked (no claims of it scored lately)",
                  highlight=False)
        raise typer.Exit(1)
    if as_json:
        print(r.model_dump_json(indent=2))
        return
    print(f"{r.provider_id}: {r.specialty} at place {r.place_of_service}, risk {r.risk:.1f}; "
          f"{r.claims:.0f} claims, {r.members} members")
    table = Table("measure", "peers", "n", "value (13 wk)", "last 5 wk", "expected",
                  "peers median", "peers p99", "surprise")
    for v in r.measures:
        short = "-" if v.short_value is None else f"{v.short_value:.3f}"
        table.add_row(v.measure, v.peer_group, f"{v.n:.0f}", f"{v.value:.3f}", short,
                      f"{v.expected:.3f}",
                      f"{v.peer_median:.3f}", f"{v.peer_p99:.3f}", f"{v.surprise:.1f}")
    Console().print(table)
    for line in r.reasons:
        print(f"- {line}")
