"""ClaimScope's model package: claim contract, vocabulary, synthetic data, the ClaimFormer."""

from model.claims import Claim, claim_json_schema, parse_claim
from model.score import Score

__all__ = ["Claim", "Score", "claim_json_schema", "parse_claim"]
