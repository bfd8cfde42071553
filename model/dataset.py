"""Labelled, tokenised claim sets drawn from the generator (for training and evaluation)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from model.claims import Claim
from model.generator import CLEAN, PATTERNS, ClaimGenerator
from model.tokenizer import MAX_TOKENS, ClaimTokenizer


@dataclass
class ClaimSet:
    claims: list[Claim]
    patterns: np.ndarray  # (N,) str: fraud pattern or "none"
    values: np.ndarray  # (N, MAX_TOKENS) int64, 0-padded
    fields: np.ndarray  # (N, MAX_TOKENS) int64

    @property
    def labels(self) -> np.ndarray:
        return (self.patterns != CLEAN).astype(np.float32)

    def __len__(self) -> int:
        return len(self.claims)

    def subset(self, mask: np.ndarray) -> ClaimSet:
        idx = np.flatnonzero(mask)
        return ClaimSet([self.claims[i] for i in idx], self.patterns[idx], self.values[idx],
                        self.fields[idx])

    def concat(self, other: ClaimSet) -> ClaimSet:
        return ClaimSet(self.claims + other.claims,
                        np.concatenate([self.patterns, other.patterns]),
                        np.concatenate([self.values, other.values]),
                        np.concatenate([self.fields, other.fields]))

    def batch(self, idx: np.ndarray, device: torch.device | str = "cpu"
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows `idx` as (values, fields) tensors trimmed to their longest claim."""
        v, f = self.values[idx], self.fields[idx]
        width = max(1, int((v != 0).sum(axis=1).max()))
        return (torch.from_numpy(v[:, :width]).to(device),
                torch.from_numpy(f[:, :width]).to(device))


def claim_set(tokenizer: ClaimTokenizer, claims: list[Claim], patterns: list[str]) -> ClaimSet:
    """Tokenise `claims`, each with its pattern (CLEAN for a clean one)."""
    values = np.zeros((len(claims), MAX_TOKENS), dtype=np.int64)
    fields = np.zeros((len(claims), MAX_TOKENS), dtype=np.int64)
    if claims:
        enc = tokenizer.encode(claims)
        values[:, : enc.values.shape[1]] = enc.values
        fields[:, : enc.fields.shape[1]] = enc.fields
    return ClaimSet(claims, np.array(patterns, dtype=object).astype(str), values, fields)


def make_claim_set(tokenizer: ClaimTokenizer, count: int, seed: int, fraud_rate: float,
                   patterns: tuple[str, ...] = PATTERNS, heldout: frozenset[str] = frozenset()
                   ) -> ClaimSet:
    """Generate `count` labelled claims (never billing `heldout` codes), validate them
    through the contract, tokenise."""
    gen = ClaimGenerator(seed=seed, fraud_rate=fraud_rate, patterns=patterns, size=count,
                         heldout=heldout)
    items = list(gen.generate(count))
    return claim_set(tokenizer, [Claim.model_validate(x.claim) for x in items],
                     [x.fraud_pattern for x in items])
