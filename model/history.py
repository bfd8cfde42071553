"""An insurer's own claims as training data: `claimscope train --claims FILE [--labels FILE]`.

Claims are contract JSONL, one claim a line, in the order they arrived (the cross-claim
checks learn what is normal from that order). Labels are JSONL lines of
`{"claim_id": ..., "fraud": true|false, "pattern": optional}`, for any subset of the
claims. Every bad line is reported with its file and line number, and the claims and
labels that are fine are used: nothing is dropped without a line saying so.

The split is by claim: a hash of the claim_id puts about a tenth of the claims in the
validation slice (model selection) and a tenth in the calibration slice (score rule,
anomaly cuts, the metrics the checkpoint reports); the rest train. Every claim of the
training slice trains the self-supervised head; the labelled ones also train the fraud
head. The checks' limits are learned from all of it, known fraud aside.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from model.checks import fit_limits
from model.claims import Claim, describe_errors, parse_claim
from model.dataset import claim_set
from model.generator import CLEAN
from model.tokenizer import ClaimTokenizer
from model.training import TrainingData

HOLDOUT_BUCKETS = 10  # claim_id hash % 10: 0 validation, 1 calibration, the rest train
FRAUD = "fraud"  # the pattern of a fraud label that names none


class Label(BaseModel):
    """One line of a labels file."""

    model_config = ConfigDict(extra="forbid")
    claim_id: str
    fraud: bool
    pattern: str | None = None


class HistoryError(ValueError):
    """Files that give nothing to train on (one line, for the CLI)."""


@dataclass
class History:
    claims: list[Claim]
    labels: dict[str, str] = field(default_factory=dict)  # claim_id -> CLEAN or a pattern
    errors: list[str] = field(default_factory=list)  # "file:line: what is wrong"


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    try:
        with path.open(encoding="utf-8", errors="surrogateescape") as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    yield lineno, line
    except OSError as e:
        raise HistoryError(f"cannot read {path}: {e.strerror}") from None


def read_history(claims_path: Path, labels_path: Path | None = None) -> History:
    """Claims (and labels) from JSONL files; every bad line becomes an entry of `errors`."""
    h = History([])
    seen: set[str] = set()
    for lineno, line in _lines(claims_path):
        try:
            c = parse_claim(line)
        except ValidationError as e:
            h.errors.append(f"{claims_path}:{lineno}: " + "; ".join(describe_errors(e)))
            continue
        if c.claim_id in seen:
            h.errors.append(f"{claims_path}:{lineno}: claim_id {c.claim_id} repeats an "
                            f"earlier line (the first one is kept)")
            continue
        seen.add(c.claim_id)
        h.claims.append(c)
    if not h.claims:
        raise HistoryError(f"{claims_path} holds no valid claim"
                           + (f" (first problem: {h.errors[0]})" if h.errors else ""))
    if labels_path is None:
        return h
    for lineno, line in _lines(labels_path):
        try:
            label = Label.model_validate_json(line)
        except ValidationError as e:
            problems = [f"{'.'.join(map(str, x['loc'])) or 'label'}: {x['msg']}"
                        for x in e.errors(include_url=False)]
            h.errors.append(f"{labels_path}:{lineno}: " + "; ".join(problems))
            continue
        if label.claim_id not in seen:
            h.errors.append(f"{labels_path}:{lineno}: claim_id {label.claim_id} is not among "
                            f"the claims")
        elif label.claim_id in h.labels:
            h.errors.append(f"{labels_path}:{lineno}: claim_id {label.claim_id} is labelled "
                            f"twice (the first label is kept)")
        elif not label.fraud and label.pattern:
            h.errors.append(f"{labels_path}:{lineno}: a clean label cannot name a pattern")
        else:
            h.labels[label.claim_id] = (label.pattern or FRAUD) if label.fraud else CLEAN
    return h


def bucket(claim_id: str) -> int:
    """Which slice a claim is in: stable across runs and machines (CRC-32 of its id)."""
    return zlib.crc32(claim_id.encode()) % HOLDOUT_BUCKETS


def history_data(h: History, vocabulary_tokenizer: ClaimTokenizer) -> TrainingData:
    """The training run's data from an insurer's history (module docstring). Price and
    dose references are learned from the training slice's claims not known to be fraud
    (`ClaimTokenizer.with_references`)."""
    known = [h.labels.get(c.claim_id) for c in h.claims]  # None: unlabelled
    slices = [min(bucket(c.claim_id), 2) for c in h.claims]  # 0 val, 1 cal, 2 train
    not_fraud = [lab in (None, CLEAN) for lab in known]

    def pick(where: int, labelled_only: bool = False, clean_only: bool = False
             ) -> tuple[list[Claim], list[str]]:
        chosen = [c for c, s, lab, ok in zip(h.claims, slices, known, not_fraud, strict=True)
                  if s == where and (lab is not None or not labelled_only)
                  and (ok or not clean_only)]
        return chosen, [h.labels.get(c.claim_id, CLEAN) for c in chosen]

    held_clean = pick(1, clean_only=True)
    if not held_clean[0]:
        raise HistoryError(f"too few claims to hold a calibration slice out ({len(h.claims)} "
                           f"claims; about {HOLDOUT_BUCKETS} or more are needed)")
    limits = fit_limits(h.claims, not_fraud)
    clean = pick(2, clean_only=True)  # references and the context table: no known fraud
    tok = vocabulary_tokenizer.with_references(clean[0])
    counts = Counter(lab for lab in known if lab is not None)
    return TrainingData(
        claim_set(tok, *pick(2, labelled_only=True)), claim_set(tok, *pick(2)),
        claim_set(tok, *pick(0, labelled_only=True)), claim_set(tok, *pick(1, labelled_only=True)),
        claim_set(tok, *held_clean), claim_set(tok, *clean), limits, tok,
        {"source": "history", "claims": len(h.claims), "labelled": sum(counts.values()),
         "labelled_fraud": sum(n for p, n in counts.items() if p != CLEAN),
         "patterns": sorted(p for p in counts if p != CLEAN), "bad_lines": len(h.errors),
         "coverage": tok.coverage(h.claims)})


HIERARCHY = {"diagnosis": "ICD-10-CM ancestors", "procedure": "CPT/HCPCS range",
             "drug": "class"}


def coverage_lines(coverage: dict) -> list[str]:
    """The coverage report, one line per field, for the CLI."""
    out = []
    for f, c in coverage.items():
        out.append(f"{f}: {c['distinct']:,} distinct, {c['own']:,} with a token of their own, "
                   f"{c['hierarchy']:,} read through their {HIERARCHY[f]} only, "
                   f"{c['unknown']:,} unknown to the vocabulary")
    return out
