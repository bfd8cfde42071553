"""The `claimscope` console script: importing the command modules registers them.

The one place where project modules are imported inside functions on purpose: each command
imports the part of the library it runs when it runs, so that `claimscope publish`,
`query` or `--help` start in ~0.3 s instead of paying for torch (~1 s and ~200 MB, in
every `model` command), Faust (the worker, `up`, `bench`) or scikit-learn and LightGBM
(`eval`). Everything below the CLI imports at module level.
"""

from stream.cli import console, data, modelcmd, service  # noqa: F401  (registers commands)
from stream.cli.common import app

__all__ = ["app"]
