"""The `claimscope` console script: importing the command modules registers them."""

from stream.cli import console, data, modelcmd, service  # noqa: F401  (registers commands)
from stream.cli.common import app

__all__ = ["app"]
