"""`claimscope reference`: member and provider reference data for the workers.

`load` reads FHIR Patient, Practitioner, PractitionerRole and Organization resources (NDJSON,
a Bundle, a JSON array) and CSV (members `id,birth_date,sex`, providers `npi,taxonomy`),
the same files `convert --references` takes, and copies them into Redis
(`stream.references`), where every worker's scoring processes resolve the references FHIR
claims do not carry, and X12 claims' provider taxonomies and DMG-less members.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from stream.cli.common import app
from stream.cli.data import load_references
from stream.cli.service import Config, one_line_errors, settings_from

if TYPE_CHECKING:
    from stream.references import RedisReferences

reference_app = typer.Typer(help="Member and provider reference data the workers join "
                            "FHIR claims with.", no_args_is_help=True)
app.add_typer(reference_app, name="reference")


def _store(config: Path | None) -> RedisReferences:
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
    refs = load_references(files)
    store = _store(config)
    with one_line_errors():
        n = store.store(refs)
        total = store.count()
    # a CSV provider is held once per provider type it answers to (Practitioner, …)
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
