"""Scorer: claims in, explained Scores out, in batches, on CPU or GPU.

    >>> from model.claims import Claim
    >>> from model.generator import ClaimGenerator
    >>> claims = [Claim(**c.claim) for c in ClaimGenerator(seed=1).generate(3)]
    >>> scorer = Scorer.load("default")
    >>> scores = scorer.score(claims)
    >>> [(s.claim_id == c.claim_id, 0 <= s.score <= 1) for s, c in zip(scores, claims)]
    [(True, True), (True, True), (True, True)]

Direction: `Score.score` in [0, 1], higher = more suspicious; flagged at
`score >= threshold` (the checkpoint's, unless overridden).

Score rule (fitted at training time on held-out claims at 5% fraud, see `training.py`):

    combined = sigmoid(a * fraud_logit + b * anomaly_logit + c)      # Platt stacking
    score    = 1 - (1 - combined) * prod(1 - p_check for each cross-claim check that fired)

where `fraud_logit` is the supervised [CLS] head and `anomaly_logit` the largest
replaced-token logit of the claim (its most surprising token) among the tokens whose code
training showed (`Raw.anomaly_logit`): a code the model never saw is surprising to it, and
no evidence of fraud. Cost: one forward pass per
batch, then for the claims to explain three more rows each (`attribute`: leave-one-out),
~300 µs a claim on one CPU core here, explanations and Scores included. Fails with
`CheckpointError` on a missing or tampered checkpoint.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import numpy as np
import torch

from model import explain
from model.checkpoint import Checkpoint, load_checkpoint
from model.checks import CheckHit, CheckState, CrossClaimChecks
from model.claims import Claim
from model.edits import EditHit, PayerEdits
from model.score import (
    ANOMALY_FPR,
    EDIT_CHANNELS,
    AttributedToken,
    Components,
    EditCitation,
    Explanation,
    Precision,
    Score,
    SurprisingToken,
    TokenPair,
)
from model.tokenizer import FIELD_ID, Encoded, Token
from model.transformer import read_claims
from model.vocabulary import default_vocabulary


def resolve_device(device: str) -> torch.device:
    """`auto` = CUDA when present, else CPU. Raises ValueError for an unavailable device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for but CUDA is not available")
    return torch.device(device)


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as /proc/cpuinfo names them (empty where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    return frozenset(f for line in text.splitlines() if line.startswith("flags")
                     for f in line.partition(":")[2].split())


def cpu_has_bf16() -> bool:
    """Native bf16 instructions (AVX512-BF16 or AMX), as the bench reports them."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def resolve_precision(precision: str, device: torch.device) -> str:
    """The encoder blocks' number format, bf16, int8 or fp32, for `precision` on `device`:
    auto = bf16 on GPUs and on CPUs with AMX (`ClaimFormer.blocks_in`), else int8
    (`ClaimFormer.blocks_int8`, CPU only).

    Why AMX and not AVX512-BF16: the faster path was measured per CPU kind
    (docs/operations.md, "On an EPYC with AVX512-BF16 but no AMX"). With AMX's tile
    multiplies bf16 wins; with AVX512-BF16 alone the VNNI int8 kernels are faster; on
    AVX2 alone bf16 is emulated and slowest."""
    if precision not in get_args(Precision):
        raise ValueError(f"precision must be one of {', '.join(get_args(Precision))}, "
                         f"not {precision!r}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" or "amx_bf16" in cpu_flags() else "int8"
    if precision == "int8" and device.type != "cpu":
        raise ValueError(f"precision int8 runs on a CPU only, not on {device}")
    return precision


# A forward pass costs about as much as this many more tokens whatever its size (op
# dispatch, oneDNN setup): ~1.3 ms against ~6.5 µs a token on one core of an EPYC with
# native bf16, batches of 8 to 256 rows (docs/operations.md, "Compute only what a claim has")
PASS_OVERHEAD_TOKENS = 200


def pass_shape(rows: int, tokens: int) -> tuple[int, int]:
    """The shape a pass of `rows` claims up to `tokens` long runs at: rows up to 8 or a
    multiple of 16 past it, tokens up to a multiple of 4.

    Every new input shape costs oneDNN a new primitive and the memory behind it (~1.4 MB a
    shape here): these give 9 row counts x 12 widths at 128 rows, the same count as
    rounding rows to a power of two, but a 70-claim pass pads to 80 rows, not 128.

    >>> pass_shape(5, 21), pass_shape(70, 48), pass_shape(128, 9)
    ((8, 24), (80, 48), (128, 12))
    """
    return (8 if rows <= 8 else -(-rows // 16) * 16), -(-tokens // 4) * 4


def pass_token_counts(max_rows: int, max_len: int) -> list[int]:
    """Every rows x width a pass of at most `max_rows` claims up to `max_len` tokens long
    can run at (`pass_shape`): the token counts the encoder's linear layers see.

    >>> len(pass_token_counts(128, 48)), pass_token_counts(8, 8)
    (55, [32, 64])
    """
    rows = {pass_shape(n, 1)[0] for n in range(1, max_rows + 1)}
    widths = {pass_shape(1, t)[1] for t in range(1, max_len + 1)}
    return sorted({r * w for r in rows for w in widths})


def pass_cost(rows: int, tokens: int) -> int:
    """A pass's cost in token-equivalents (`PASS_OVERHEAD_TOKENS`)."""
    r, t = pass_shape(rows, tokens)
    return PASS_OVERHEAD_TOKENS + r * t


def plan_passes(lengths: np.ndarray, max_rows: int) -> list[np.ndarray]:
    """Row indices of each forward pass for claims `lengths` tokens long: shortest first,
    cut where the cost model (`pass_cost`) says, so a pass pads its claims to a length near
    their own instead of the longest claim's, and no pass has more than `max_rows` rows.

    Cuts fall only where the padded width changes; between them a dynamic programme picks
    the cheapest grouping (a group over `max_rows` is split evenly). Rows are independent,
    so the grouping never changes an output.

    >>> [p.tolist() for p in plan_passes(np.array([40, 5, 6, 44, 7]), 128)]  # one pass
    [[1, 2, 4, 0, 3]]
    >>> [len(p) for p in plan_passes(np.array([8] * 60 + [44] * 60), 128)]  # 712 + 3,016
    [60, 60]
    >>> [len(p) for p in plan_passes(np.array([30] * 300), 128)]
    [100, 100, 100]
    """
    if not len(lengths):
        return []
    order = np.argsort(lengths, kind="stable")
    width = -(-lengths[order] // 4) * 4
    cuts = np.concatenate([[0], np.flatnonzero(np.diff(width)) + 1, [len(order)]])

    def split(a: int, b: int) -> list[tuple[int, int]]:
        k = -(-(b - a) // max_rows)
        edges = [a + (b - a) * i // k for i in range(k + 1)]
        return list(itertools.pairwise(edges))

    def cost(a: int, b: int) -> int:
        return sum(pass_cost(hi - lo, int(width[hi - 1])) for lo, hi in split(a, b))

    best = [0] + [0] * (len(cuts) - 1)  # best[j]: cheapest cover of the first cuts[j] rows
    came = [0] * len(cuts)
    for j in range(1, len(cuts)):
        best[j], came[j] = min((best[i] + cost(cuts[i], cuts[j]), i) for i in range(j))
    groups, j = [], len(cuts) - 1
    while j > 0:
        groups[:0] = split(int(cuts[came[j]]), int(cuts[j]))
        j = came[j]
    return [order[lo:hi] for lo, hi in groups]


def padded(values: np.ndarray, fields: np.ndarray, cls_value: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """A pass's claims padded to its `pass_shape`: filler rows hold a lone [CLS], filler
    tokens are padding (attention masks them out), so the real rows' outputs do not
    change."""
    B, T = values.shape
    rows, width = pass_shape(B, T)
    if (rows, width) == (B, T):
        return values, fields
    v = np.zeros((rows, width), dtype=values.dtype)
    f = np.zeros((rows, width), dtype=fields.dtype)
    v[:B, :T], f[:B, :T] = values, fields
    v[B:, 0], f[B:, 0] = cls_value, FIELD_ID["cls"]
    return v, f


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


@dataclass
class Raw:
    """Model outputs for a batch, as numpy."""

    fraud_logit: np.ndarray  # (B,)
    surprise: np.ndarray  # (B, T) replaced-token logits, -inf on padding and [CLS]
    attentions: list[torch.Tensor]  # [(B, nh, T, T)] per layer, on the model's device
    novel: np.ndarray  # (B, T) tokens whose code training never showed (`Scorer.novel`)

    @property
    def anomaly_logit(self) -> np.ndarray:
        """The most surprising token's logit among those whose code training showed: a
        code training never saw (or any token it never showed: an unknown drug's) is no
        evidence. Read over every token, clean claims with a code held out of training were
        flagged 6x (diagnoses) to 15x (procedures) as often as others, nearly all by the
        anomaly channel alone, on the never-trained code (docs/model.md)."""
        return np.where(self.novel, -np.inf, self.surprise).max(axis=1)

    def rows(self, rows: np.ndarray | slice, width: int | None = None) -> Raw:
        """These rows (and the first `width` tokens) of the batch."""
        t = slice(None, width)
        return Raw(self.fraud_logit[rows], self.surprise[rows, t],
                   [a[rows, :, t, t] for a in self.attentions], self.novel[rows, t])

    @property
    def replaced_probability(self) -> np.ndarray:
        """(B, T) the surprise head's probability that each token was replaced (0 on
        padding and [CLS])."""
        return sigmoid(self.surprise)


class Scorer:
    def __init__(self, checkpoint: Checkpoint, device: str = "auto", batch_size: int | None = None,
                 threshold: float | None = None, check_state: CheckState | None = None,
                 explain: str = "flagged", precision: Precision = "auto",
                 anomaly_fpr: float = ANOMALY_FPR) -> None:
        """`explain`: "flagged" explains the claims the model flags (`model.explain`; the
        others' reason says nothing is unusual); "all" explains every claim.
        `batch_size`: forward-pass rows; default 128 on CPU (length-sorted rows pad less in
        small batches: ~40% less time a claim than 512; docs/model-history.md), 512 on
        CUDA.
        `anomaly_fpr`: the anomaly channel's false-positive budget on clean claims; the
        channel flags a claim on its own past the checkpoint's cut for it (ValueError for
        a budget outside those the checkpoint calibrated).
        `check_state`: where the cross-claim checks remember claims (none: no checks); the
        checks take what is normal from the checkpoint (`checks.json`). The payer edits
        (`model.edits`) always run; their per-day MUEs count across claims in this state
        (none: each claim alone).
        `precision`: "auto" runs the encoder blocks in bf16 on GPUs and on CPUs with
        AMX (`resolve_precision`; embeddings, softmax, the final norm and the heads stay
        fp32; logits move by up to ~0.05), else with int8 linear layers
        (`ClaimFormer.blocks_int8`);
        "fp32" is the reference both are checked against (`claimscope bench`'s parity)."""
        if explain not in ("flagged", "all"):
            raise ValueError(f"explain must be 'flagged' or 'all', not {explain!r}")
        self.explain_all = explain == "all"
        self.ck = checkpoint
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.model = checkpoint.model.to(self.device).eval().blocks_in(
            torch.bfloat16 if self.precision == "bf16" else torch.float32)
        if self.precision == "int8":
            self.model.blocks_int8()
        self.tokenizer = checkpoint.tokenizer
        # token id -> training never showed it: no evidence for the anomaly channel
        self.novel = self.model.unseen_tokens().cpu().numpy()
        self.cal = checkpoint.calibration
        self.threshold = self.cal.threshold if threshold is None else threshold
        self.anomaly_fpr = anomaly_fpr
        self.anomaly_cut = self.cal.anomaly_cut(anomaly_fpr)
        self.batch_size = batch_size or (512 if self.device.type == "cuda" else 128)
        self.checks = (CrossClaimChecks(check_state, checkpoint.check_limits)
                       if check_state is not None else None)
        self.edits = PayerEdits(check_state)
        self.vocab = default_vocabulary()

    @classmethod
    def load(cls, path: str = "default", device: str = "auto", **kwargs) -> Scorer:
        return cls(load_checkpoint(path), device=device, **kwargs)

    @property
    def model_version(self) -> str:
        return self.ck.model_version

    # How the forward passes run: PyTorch eager, in passes of like length. ONNX Runtime
    # and torch.compile were measured and not kept (docs/operations.md)
    path = "torch eager"

    # -- numbers ------------------------------------------------------------------------

    @torch.inference_mode()
    def warm_up(self) -> int:
        """Run the encoder's linear layers once at every token count a pass can have
        (`pass_shape`: row counts up to `batch_size` times widths up to the longest claim),
        so that no pass meets one first while claims wait. oneDNN builds a primitive for
        each new input shape of a bf16 linear layer: here the 108 pass shapes cost 1.15 s
        of CPU the first time and 0.86 s the second. Linear layers alone, on zeros, since
        the other kernels build next to nothing a shape: ~0.35 s of CPU, against 1.2 s for
        a pass at each shape (docs/operations.md, "Warm before ready"). Returns how many
        token counts ran."""
        dtype = self.model.blocks[0].ln1.weight.dtype  # the blocks' (`blocks_in`)
        layers = [m for m in self.model.blocks.modules() if hasattr(m, "in_features")]
        tokens = pass_token_counts(self.batch_size, self.model.cfg.max_len)
        for n in tokens:
            for layer in layers:  # nn.Linear, or its int8 form (`blocks_int8`)
                layer(torch.zeros(n, layer.in_features, dtype=dtype, device=self.device))
        return len(tokens)

    @torch.inference_mode()
    def raw(self, values: np.ndarray, fields: np.ndarray,
            attention: bool | np.ndarray = False) -> Raw:
        """Model outputs for pre-encoded claims (any number, any order), in passes of
        claims of like length (`plan_passes`, at most `batch_size` rows).

        Attention weights (rows x layers x heads x T x T floats) are kept only when asked
        for: `True` for every row, or a boolean mask of the rows to keep them for (in row
        order); a pass with none of those rows runs the fused kernel, which never writes
        them out."""
        B, T = values.shape
        real = values != 0
        lengths = np.where(real.any(axis=1), T - np.argmax(real[:, ::-1], axis=1), 1)
        out = Raw(np.zeros(B, np.float32), np.full((B, T), -np.inf, np.float32), [],
                  self.novel[values])
        keep = np.full(B, attention) if isinstance(attention, bool) else attention
        slot = np.cumsum(keep) - 1  # a kept row's place among the kept ones
        if keep.any():
            out.attentions = [torch.zeros(int(keep.sum()), self.model.cfg.n_heads, T, T,
                                          device=self.device)
                              for _ in range(self.model.cfg.n_layers)]
        for rows in plan_passes(lengths, self.batch_size):
            n, width, mine = len(rows), int(lengths[rows].max()), keep[rows]
            v, f = (torch.as_tensor(x, device=self.device) for x in padded(
                values[rows, :width], fields[rows, :width], self.tokenizer.cls_token.value))
            fraud, surprise, a = read_claims(self.model, v, f, bool(mine.any()))
            out.fraud_logit[rows] = fraud[:n].float().cpu().numpy()
            out.surprise[rows, :width] = surprise[:n, :width].float().cpu().numpy()
            if mine.any():
                to = torch.as_tensor(slot[rows[mine]], device=self.device)
                at = torch.as_tensor(np.flatnonzero(mine), device=self.device)
                for whole, layer in zip(out.attentions, a, strict=True):
                    whole[to, :, :width, :width] = layer[at, :, :width, :width].float()
        return out

    def combined_logit(self, raw: Raw) -> np.ndarray:
        """The Platt-stacked logit of the fraud and anomaly logits (module docstring)."""
        c = self.cal
        return c.a * raw.fraud_logit + c.b * raw.anomaly_logit + c.c

    def deciding_logit(self, raw: Raw, anomaly_only: np.ndarray) -> np.ndarray:
        """The logit of the channel that decided: the anomaly logit where only the anomaly
        channel fired, else the combined score's (before its sigmoid)."""
        return np.where(anomaly_only, raw.anomaly_logit, self.combined_logit(raw))

    def attribute(self, values: np.ndarray, fields: np.ndarray, raw: Raw,
                  anomaly_only: np.ndarray, attention: bool = False
                  ) -> tuple[np.ndarray, np.ndarray, list[torch.Tensor]]:
        """Leave-one-out attribution of the deciding logit (`model.explain`) for claims
        whose plain pass is `raw`: (B, k) candidate positions, largest fall first, (B, k)
        each one's fall (-inf for a padding position), and, with `attention`, the claims'
        attention weights.

        With `attention` the claims run again beside their removals, in the same passes,
        keeping the claims' weights: one pass for what took two (a pass costs ~200 tokens
        of overhead, and a share's few flagged claims make a small one). The falls are
        then measured from that pass's own logits, so both sides come from one kernel."""
        at = explain.candidates(raw.surprise, values, fields)
        B, k = at.shape
        gone_v, gone_f = explain.without(values, fields, at)
        if attention:
            both = self.raw(np.concatenate([values, gone_v]), np.concatenate([fields, gone_f]),
                            attention=np.arange(B * (k + 1)) < B)
            raw = Raw(both.fraud_logit[:B], both.surprise[:B], both.attentions,
                      both.novel[:B])
            gone = Raw(both.fraud_logit[B:], both.surprise[B:], [], both.novel[B:])
        else:
            gone = self.raw(gone_v, gone_f)
        fall = (self.deciding_logit(raw, anomaly_only)[:, None]
                - self.deciding_logit(gone, np.repeat(anomaly_only, k)).reshape(B, k))
        fall = np.where(np.take_along_axis(raw.surprise, at, 1) > -np.inf, fall, -np.inf)
        order = np.argsort(-fall, axis=1)
        return np.take_along_axis(at, order, 1), np.take_along_axis(fall, order, 1), raw.attentions

    def anomalous(self, anomaly_logit: np.ndarray) -> np.ndarray:
        """Where the anomaly channel fires on its own."""
        return anomaly_logit >= self.anomaly_cut

    def combine(self, raw: Raw) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(fraud probability, anomaly in [0, 1], combined score) per claim."""
        c = self.cal
        fraud = sigmoid(c.fraud_a * raw.fraud_logit + c.fraud_c)
        combined = sigmoid(self.combined_logit(raw))
        return fraud, sigmoid(raw.anomaly_logit), combined

    # -- Scores -------------------------------------------------------------------------

    def score(self, claims: Sequence[Claim], now: dt.datetime | None = None) -> list[Score]:
        """Score and explain `claims` (any number), returned in the order given.

        Claims run in passes of like length (`raw`), so short claims are not padded to the
        longest one. The claims to explain are then explained together, whichever pass
        they came in.
        """
        hits = self.checks.run(claims) if self.checks else [[] for _ in claims]
        edits = self.edits.run(claims)
        seqs = [self.tokenizer.tokens_of(c) for c in claims]
        enc = self.tokenizer.pack(seqs)
        raw = self.raw(enc.values, enc.fields)
        return self._scores(claims, seqs, raw, hits, edits, now or dt.datetime.now(dt.UTC))

    def inspect(self, claim: Claim) -> tuple[Score, Encoded, Raw]:
        """One claim's Score with the tokens and model outputs behind it (per-token
        surprise, every head's attention): what the CLI's `explain` and the console's heat
        map show."""
        hits = self.checks.run([claim]) if self.checks else [[]]
        edits = self.edits.run([claim])
        enc = self.tokenizer.encode([claim])
        raw = self.raw(enc.values, enc.fields, attention=True)
        seqs = list(zip(enc.tokens, enc.truncated.tolist(), strict=True))
        return (self._scores([claim], seqs, raw, hits, edits, dt.datetime.now(dt.UTC))[0],
                enc, raw)

    def _scores(self, claims: Sequence[Claim], seqs: list[tuple[list[Token], bool]], raw: Raw,
                hits: list[list[CheckHit]], edits: list[list[EditHit]],
                scored_at: dt.datetime) -> list[Score]:
        """The Scores of claims whose tokens are `seqs` and whose plain pass is `raw`. The
        score is the model's and the checks' (the score rule); a payer edit flags a claim
        whatever its score, names its channel in `flagged_by` and cites itself."""
        fraud, anomaly, combined = self.combine(raw)
        keep = np.array([math.prod(1.0 - h.probability for h in hs) for hs in hits])
        score = 1.0 - (1.0 - combined) * keep  # the score rule: model, then checks
        fired, odd = combined >= self.threshold, self.anomalous(raw.anomaly_logit)
        model_flags = fired | odd
        explained = self._explanations(seqs, raw, np.flatnonzero(
            model_flags | self.explain_all), odd & ~fired)
        order = np.argsort(-raw.surprise, axis=1)[:, : explain.N_SURPRISING]  # (B, 3)
        nats = np.logaddexp(0, np.take_along_axis(raw.surprise, order, 1))  # -log p(belongs)
        # numpy scalars are slow in a per-claim loop: take everything out as Python lists
        fraud_l, anomaly_l = fraud.round(6).tolist(), anomaly.round(6).tolist()
        fired_l, score_l, odd_l = fired.tolist(), score.tolist(), odd.tolist()
        model_l = model_flags.tolist()
        order_l, nats_l = order.tolist(), nats.astype(np.float64).round(4).tolist()
        out = []
        for b, claim in enumerate(claims):
            toks = seqs[b][0]
            p = score_l[b]
            broke = edits[b]
            flagged_by = (["fraud_model"] if fired_l[b] else []) + (
                ["anomaly"] if odd_l[b] else []) + [h.name for h in hits[b]] + [
                e for e in EDIT_CHANNELS if any(h.edit == e for h in broke)]
            why = explained.get(b)
            surprising = [] if why is None else [  # a claim not explained names nothing
                SurprisingToken.model_construct(token=toks[i].label, field=toks[i].field,
                                                surprise=n)
                for i, n in zip(order_l[b], nats_l[b], strict=True) if i < len(toks)]
            line = why.reason if why is not None and model_l[b] else explain.NOTHING_UNUSUAL
            rules = [h.detail for h in broke] + [h.reason for h in hits[b]]
            if rules:  # edits, then checks; the model's own reason only if it flags itself
                line = "; ".join(rules + ([line] if model_l[b] else []))
            # build(), not validation: every value is computed above from numbers we own
            out.append(Score.model_construct(
                claim_id=claim.claim_id, member_id=claim.member_id,
                provider_id=claim.provider_id, score=round(p, 6),
                flagged=p >= self.threshold or odd_l[b] or bool(broke),
                threshold=self.threshold,
                flagged_by=flagged_by,
                components=Components.model_construct(fraud_probability=fraud_l[b],
                                            anomaly=anomaly_l[b]),
                explanation=Explanation.model_construct(
                    reason=line, explained=why.channel if why else None,
                    top_tokens=why.tokens if why else [], top_pairs=why.pairs if why else [],
                    field_importance=why.fields if why else {},
                    surprising_tokens=surprising, checks=[h.name for h in hits[b]],
                    edits=[EditCitation.model_construct(
                        edit=h.edit, codes=list(h.codes), detail=h.detail,
                        table_version=h.table_version) for h in broke]),
                unknown=claim.unknown, model_version=self.model_version,
                scored_at=scored_at, latency_ms=None))
        return out

    def _explanations(self, seqs: list[tuple[list[Token], bool]], raw: Raw, want: np.ndarray,
                      anomaly_only: np.ndarray, chunk: int = 256) -> dict[int, Why]:
        """Per claim in `want`: its attribution read out as top tokens, pairs, field shares
        and a reason (`model.explain`), `chunk` claims at a time, shortest first (less
        padding). Their attention weights come from `raw` when it kept them (`inspect`),
        else from the leave-one-out pass (`attribute`)."""
        want = want[np.argsort([len(seqs[i][0]) for i in want], kind="stable")]
        out: dict[int, Why] = {}
        for s in range(0, len(want), chunk):
            rows = want[s:s + chunk]
            enc = self.tokenizer.pack([seqs[i] for i in rows])
            T = enc.values.shape[1]
            mine = raw.rows(rows, T)
            out.update(zip(rows.tolist(), self._explain(enc, mine, anomaly_only[rows]),
                           strict=True))
        return out

    def _explain(self, enc: Encoded, raw: Raw, only: np.ndarray) -> list[Why]:
        """The explanations of the claims in `enc` (plain pass `raw`, with or without its
        attention weights); `only`: those the anomaly channel alone flagged."""
        values, fields = enc.values, enc.fields
        at, fall, attentions = self.attribute(values, fields, raw, only,
                                              attention=not raw.attentions)
        top = at[:, : explain.N_TOP]
        layer, head, key, weight, found = explain.partners(attentions, fields, top)
        fall = fall.astype(np.float64).round(4)
        named = (fall > 0) & (fall > explain.MINOR * fall[:, :1])  # ranked: a prefix per row
        per_token = np.zeros(values.shape)
        np.put_along_axis(per_token, at, np.where(named, fall, 0.0), axis=1)
        shares = explain.field_importance(per_token, fields)
        top_l, fall_l = top.tolist(), fall[:, : explain.N_TOP].tolist()
        named_l = named.tolist()
        layer_l, head_l, key_l = layer.tolist(), head.tolist(), key.tolist()
        weight_l, found_l = weight.astype(np.float64).round(4).tolist(), found.tolist()
        out = []
        for j, toks in enumerate(enc.tokens):
            tokens, pairs, seen = [], [], set()
            for n, (i, a) in enumerate(zip(top_l[j], fall_l[j], strict=True)):
                if not named_l[j][n]:
                    break  # the rest barely moved the score, or not up
                tokens.append(AttributedToken.model_construct(
                    token=toks[i].label, field=toks[i].field, attribution=a))
                k = key_l[j][n]
                if not found_l[j][n] or frozenset((toks[i].value, toks[k].value)) in seen:
                    continue
                seen.add(frozenset((toks[i].value, toks[k].value)))
                pairs.append(TokenPair.model_construct(
                    query=explain.describe(toks[i], self.vocab),
                    key=explain.describe(toks[k], self.vocab),
                    layer=layer_l[j][n], head=head_l[j][n], weight=weight_l[j][n]))
            partner = key_l[j][0] if found_l[j][0] else None
            line = (explain.reason(toks, top_l[j][0], partner, self.vocab) if tokens
                    else explain.AS_A_WHOLE)
            out.append(Why("anomaly" if only[j] else "fraud_model", tokens, pairs, shares[j],
                           line))
        return out


@dataclass
class Why:
    """One claim's explanation of its deciding channel, before it becomes a Score's."""

    channel: str
    tokens: list[AttributedToken]
    pairs: list[TokenPair]
    fields: dict[str, float]
    reason: str
