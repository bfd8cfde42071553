"""`claimscope reference`: member and provider reference data for the workers.

`load` reads FHIR Patient, Practitioner, PractitionerRole and Organization resources (NDJSON,
a Bundle, a JSON array) and CSV (members `id,birth_date,sex`, providers `npi,taxonomy`),
the same files `convert --references` takes, and copies them into Redis
(`stream.references`), where every worker's scoring processes resolve the FHIR claims'
references that the claims do not carry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from model.formats import ReferenceDataError, References
from stream.cli.common import app, err, fail
from stream.cli.service import Config, one_line_errors, settings_from

reference_app = typer.Typer(help="Member and provider reference data the workers join "
                            "FHIR claims with.", no_args_is_help=True)
app.add_typer(reference_app, name="reference")
SHOWN_PROBLEMS = 10  # records skipped: the first few, then a count


def _store(config: Path | None):
    from stream.preflight import check_redis
    from stream.references import RedisReferences
    from stream.store import redis_client

    settings = settings_from(config)
    with one_line_errors():
        check_redis(settings)
    return RedisReferences(redis_client(settings), settings.key_prefix)


@reference_app.command("load")
def load(files: Annotated[list[Path], typer.Argument(help="FHIR (NDJSON, Bundle, JSON "
                                                     "array) or CSV files")],
         config: Config = None) -> None:
    """Load reference data into Redis (adds, and replaces by type and id); a file that
    cannot be read at all fails the command before anything is written."""
    try:
        refs = References.load(files)
    except ReferenceDataError as e:
        raise fail(f"references: {e}") from None
    for problem in refs.problems[:SHOWN_PROBLEMS]:
        err.print(f"references: skipped {problem}", highlight=False, markup=False,
                  soft_wrap=True)
    if len(refs.problems) > SHOWN_PROBLEMS:
        err.print(f"references: {len(refs.problems) - SHOWN_PROBLEMS} more records skipped",
                  highlight=False, markup=False, soft_wrap=True)
    store = _store(config)
    with one_line_errors():
        n = store.store(refs)
        total = store.count()
    print(f"loaded {n} resources from {len(files)} files ({len(refs.problems)} records "
          f"skipped); {total} held")


@reference_app.command("count")
def count(config: Config = None) -> None:
    """How many resources the workers can resolve references to."""
    store = _store(config)
    with one_line_errors():
        print(store.count())


@reference_app.command("clear")
def clear(config: Config = None) -> None:
    """Remove all reference data (then `load` afresh)."""
    store = _store(config)
    with one_line_errors():
        removed = store.clear()
    print(f"removed {removed} keys")
