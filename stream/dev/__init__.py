"""The local harness: embedded broker and Redis (`services`), worker child processes
(`procs`), `claimscope up`, `claimscope bench` and the no-op worker it measures against.

Nothing that runs in production imports this package: `stream.worker`'s import graph is the
product's runtime.
"""
