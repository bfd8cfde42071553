"""`python -m stream ...` = the `claimscope` command (used to start worker subprocesses)."""

from stream.cli import main

main()
