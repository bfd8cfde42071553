"""`claimscope edits update`: rebuild the NCCI edit tables from a quarter's CMS files.

Why a command: CMS publishes new PTP, MUE and add-on edits every quarter, and a payer that
runs ClaimScope must apply this quarter's, not the ones vendored with the release. The
command reads the files as CMS publishes them (`model.cms.ncci`) or a northstar checkout
(`model.cms.northstar`), and writes the same three files `model.cms.tables` loads, with
their VERSION.json entries (`model.cms.build`).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from stream.cli.common import app, fail

edits_app = typer.Typer(help="The payer edits' tables: NCCI PTP, MUE and add-on code edits.",
                        no_args_is_help=True)
app.add_typer(edits_app, name="edits")


@edits_app.command("update")
def update(
    source: Annotated[Path, typer.Option(
        "--from", help="a folder of CMS's quarterly NCCI downloads (the zips, or what they "
        "unzip to: ccipra-*.TXT, MCR_MUE_PractitionerServices_Eff_*.csv, AOC_V*-MCR.txt), "
        "or a northstar checkout")],
    out: Annotated[Path | None, typer.Option(
        "--out", help="where to write the tables and VERSION.json (default: the vendored "
        "folder, model/vocab/cms/)")] = None,
    as_of: Annotated[str | None, typer.Option(
        "--as-of", help="keep the PTP and add-on edits in force on this date, YYYY-MM-DD "
        "(default: the newest effective date in the files)")] = None,
) -> None:
    """Rebuild ncci_ptp_practitioner.npz, mue_practitioner.csv and addon.csv, and their
    VERSION.json entries. Progress goes to stderr; what was written, to stdout."""
    from model.cms import build, ncci, northstar
    from model.cms.tables import folder

    day = _date(as_of) if as_of else None
    try:
        if northstar.is_checkout(source):
            tables = northstar.edit_tables(northstar.Northstar(source),
                                           day or northstar.NCCI_DATE)
        else:
            tables = ncci.edit_tables(source, day)
        entries = build.write_edits(out or folder(), tables)
    except (build.BuildError, OSError) as exc:
        raise fail(escape(str(exc))) from None
    for name, entry in entries.items():
        print(f"{name}: {entry['rows']:,} rows, {entry['release']}")


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise fail(escape(f"--as-of {text!r}: not a date (YYYY-MM-DD)")) from None
