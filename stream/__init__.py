"""ClaimScope's streaming package: Faust workers, Redis store, client API, CLI."""

from model.claims import Claim
from model.score import Score

__all__ = ["Claim", "Score"]
