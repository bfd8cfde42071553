"""ClaimFormer: a small transformer encoder that reads a claim's tokens.

Two heads on one encoder:
- `fraud`: a supervised fraud logit from the [CLS] token (trained on labelled claims);
- `surprise`: a per-token logit that the token does not belong with the others. It is
  trained self-supervised by *replaced-token detection* (ELECTRA, Clark et al. 2020), the
  discriminative form of masked-token prediction: a share of tokens is swapped for another
  value of the same field and the head learns to spot them. Unlike masked-LM scoring, which
  needs one forward pass per masked position, it scores every token in one pass, so the
  anomaly score costs nothing extra at serving time.

Beside attention, each code's token embeds how well the claim's context accounts for it,
read from counts of what goes with what in the training history (`Support`): attention
alone could not say that no diagnosis on a claim justifies its drug.

Attention is written out (not `nn.MultiheadAttention`) because explanations need the
weights of every head and layer.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ClaimFormerConfig:
    vocab_size: int = 1024
    n_fields: int = 16
    max_len: int = 48  # tokenizer.MAX_TOKENS
    d_model: int = 128
    n_heads: int = 4  # the seed's "4 specialists"
    n_layers: int = 2  # layer 1 pairs tokens, layer 2 relates the pairs
    d_ffn: int = 256  # 2x d_model: 4x bought no accuracy here and halves throughput
    dropout: float = 0.1
    # Per field id: how many positions back a service-line token's line head sits (0 = not
    # a line token). A "$150" token then also embeds its line's code: "$150 for 99213".
    line_offsets: tuple[int, ...] = ()
    # Ancestors per token (tokenizer.GROUP_LEVELS): a diagnosis embeds its ICD-10-CM
    # subcategory, category, block and chapter too
    group_levels: int = 4
    # In training, the share of codes that read as their ancestors alone (their own vector
    # dropped), so that a code never seen, whose own vector is zero (`forget_unseen`),
    # reads as its family does
    value_dropout: float = 0.1
    # The context-code table (`Support`): context rows (diagnoses, specialties, age bands,
    # sexes) x code columns (diagnoses, procedures, drugs); row and column 0 are "not a
    # context" and "not a code", 1 "no data" (`model.training.pair_table`), so 2 x 2 reads
    # nothing
    pair_rows: int = 2
    pair_cols: int = 2
    # Positions that can hold a context token (the header and the diagnoses); 0 = any
    context_width: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS = {
    "default": {},
    "production": {"d_model": 256, "n_heads": 8, "n_layers": 4, "d_ffn": 512},
}


class SelfAttention(nn.Module):
    def __init__(self, cfg: ClaimFormerConfig) -> None:
        super().__init__()
        assert cfg.d_model % cfg.n_heads == 0
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.ablated: int | None = None  # a head whose output is zeroed (`ablate_head`)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, weights: bool
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`mask`: (B, 1, 1, T) 0 for a token, -inf for padding (added to the scores: a
        third cheaper than masked_fill on a CPU). The attention weights (B, nh, T, T) are
        returned when `weights`; without them the fused `scaled_dot_product_attention`
        runs, which never writes them out: faster on full-length claims, slower on short
        ones, ~15% less scoring CPU over the bench's claims (docs/model.md, "Cost").
        (Sums are blocked by shape, so in bf16 a claim's score moves with the rows and
        width of the pass it lands in: by up to ~5e-4 seen in the stream; fp32 by float
        rounding.)"""
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)
                   for t in (q, k, v))  # (B, nh, T, hs)
        att = None
        if not weights:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.dtype),
                                               dropout_p=self.drop.p if self.training else 0)
        else:
            att = (q / math.sqrt(k.size(-1))) @ k.transpose(-2, -1) + mask  # (B, nh, T, T)
            # softmax in fp32 whatever the dtype: on a CPU a bf16 softmax is ~4x slower
            # than an fp32 one (a fifth of a bf16 forward pass), and less exact
            att = att.softmax(dim=-1, dtype=torch.float32)
            y = self.drop(att).to(v.dtype) @ v  # (B, nh, T, hs)
        if self.ablated is not None:
            y[:, self.ablated] = 0  # what the model does without this head
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.proj(y), att


class Block(nn.Module):
    def __init__(self, cfg: ClaimFormerConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = SelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.ffn = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_ffn), nn.GELU(),
                                 nn.Linear(cfg.d_ffn, cfg.d_model), nn.Dropout(cfg.dropout))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, weights: bool
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        a, att = self.attn(self.ln1(x), mask, weights)
        x = x + a
        x = x + self.ffn(self.ln2(x))
        return x, att


class Support(nn.Module):
    """How well a claim's context accounts for each of its codes, from counts: the
    pointwise mutual information of (context token, code token) pairs in the claims the
    model learned from (`model.training.pair_table`: log (observed + 1) / (expected + 1)
    co-occurrences), read three ways per code:

    - *justified*: a procedure's or drug's best PMI with any diagnosis on the claim
      (does a diagnosis call for it?);
    - *specialty*: its PMI with the billing provider's specialty;
    - *demographic*: its lower PMI with the member's age band and sex.

    Each is embedded as a bucket and added to the code's token, and the fraud head reads
    each one's weakest code on the claim.

    Why counts and a maximum: softmax attention cannot say "no key matches" (its weights sum
    to one, so a drug no diagnosis treats still reads an average of the diagnoses), and a
    learned maximum does not learn the relation from replaced-token detection where counts
    of the same claims show it (figures: docs/model.md, docs/model-history.md). The counts
    come from the history a checkpoint is trained on, so an insurer's own claims set its
    table."""

    CLIP = 8  # PMI buckets -8..8 nats
    DIAGNOSIS, SPECIALTY, AGE, SEX = 1, 2, 3, 4  # context kinds (`kind`; 0 = not context)
    READINGS = 3  # justified, specialty, demographic

    def __init__(self, cfg: ClaimFormerConfig) -> None:
        super().__init__()
        # token id -> its context row and kind, and its code column (0 = none)
        self.register_buffer("row", torch.zeros(cfg.vocab_size, dtype=torch.long))
        self.register_buffer("kind", torch.zeros(cfg.vocab_size, dtype=torch.long))
        self.register_buffer("col", torch.zeros(cfg.vocab_size, dtype=torch.long))
        # token id -> whether a diagnosis must justify it (procedures, drugs)
        self.register_buffer("line", torch.zeros(cfg.vocab_size, dtype=torch.bool))
        self.register_buffer("pmi", torch.zeros(cfg.pair_rows, cfg.pair_cols,
                                                dtype=torch.float16))
        self.bucket = nn.Embedding(self.READINGS * (2 * self.CLIP + 1) + 1, cfg.d_model,
                                   padding_idx=0)
        self.width = cfg.context_width

    def forward(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per token (B, T, READINGS): its three readings, 0 where one does not apply;
        and (B, T, READINGS) whether it applies."""
        head = values[:, :self.width] if self.width else values  # where contexts can be
        r, k, c = self.row[head], self.kind[head], self.col[values]
        pairs = self.pmi[r[:, None, :], c[:, :, None]].float()  # (B, code T, context T)
        code = c > 0

        def over(ctx: torch.Tensor, reduce: str) -> tuple[torch.Tensor, torch.Tensor]:
            fill = float("-inf") if reduce == "max" else float("inf")
            x = pairs.masked_fill(~ctx[:, None, :], fill)
            x = x.amax(dim=-1) if reduce == "max" else x.amin(dim=-1)
            ok = code & ctx.any(dim=-1, keepdim=True)
            return torch.where(ok, x, 0.0), ok

        justified, j_ok = over(k == self.DIAGNOSIS, "max")
        j_ok = j_ok & self.line[values]
        specialty, s_ok = over(k == self.SPECIALTY, "max")
        demographic, d_ok = over((k == self.AGE) | (k == self.SEX), "min")
        readings = torch.stack([justified * j_ok, specialty, demographic], dim=-1)
        return readings, torch.stack([j_ok, s_ok, d_ok], dim=-1)

    def embed(self, readings: torch.Tensor, applies: torch.Tensor) -> torch.Tensor:
        """(B, T, C) the sum of each applicable reading's bucket embedding: a multi-hot
        of the buckets times the table (three lookups and a sum per token cost ~10x as
        much on a CPU)."""
        width = 2 * self.CLIP + 1
        b = readings.round().clamp(-self.CLIP, self.CLIP).long() + self.CLIP + 1
        b = b + width * torch.arange(self.READINGS, device=b.device)
        hot = torch.zeros(*b.shape[:2], self.bucket.num_embeddings, device=b.device,
                          dtype=self.bucket.weight.dtype)
        # a reading that does not apply writes 0 (to column 0): row 0 is never read, and
        # so, as with padding_idx in a lookup, never trained
        hot.scatter_(2, torch.where(applies, b, 0), applies.to(hot.dtype))
        return hot @ self.bucket.weight

    @staticmethod
    def weakest(readings: torch.Tensor, applies: torch.Tensor) -> torch.Tensor:
        """(B, READINGS) each reading's lowest value on the claim (0 where none applies)."""
        low = readings.masked_fill(~applies, float("inf")).amin(dim=1)
        return torch.where(applies.any(dim=1), low, 0.0)


class ClaimFormer(nn.Module):
    def __init__(self, cfg: ClaimFormerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.value = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.field = nn.Embedding(cfg.n_fields, cfg.d_model)
        self.position = nn.Embedding(cfg.max_len, cfg.d_model)
        # a line token's code, as context (padding_idx: a removed code adds nothing)
        self.line = nn.Embedding(cfg.vocab_size, cfg.d_model, padding_idx=0)
        self.group = nn.Embedding(cfg.vocab_size, cfg.d_model, padding_idx=0)  # ancestors
        # token id -> its ancestors' group token ids (0 = none); set from the tokenizer,
        # saved with the weights
        self.register_buffer("group_of", torch.zeros(cfg.vocab_size, cfg.group_levels,
                                                     dtype=torch.long))
        offsets = list(cfg.line_offsets) + [0] * (cfg.n_fields - len(cfg.line_offsets))
        self.register_buffer("line_offsets", torch.tensor(offsets), persistent=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.support = Support(cfg)
        # the fraud head reads [CLS] and the claim's weakest code of each Support reading
        self.fraud = nn.Sequential(nn.Linear(cfg.d_model + Support.READINGS, cfg.d_model),
                                   nn.Tanh(), nn.Linear(cfg.d_model, 1))
        self.surprise = nn.Linear(cfg.d_model, 1)
        self._codes: torch.Tensor | None = None  # `codes`' table, and the weights behind it
        self._codes_from: tuple = ()

    def forward(self, values: torch.Tensor, fields: torch.Tensor, attention: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """values, fields: (B, T) ids, 0 = padding. Embedding = value (+ its ancestors in
        its code system) + field type + position (+ the line's code for the numbers of a
        service line) + how well the claim's context accounts for a code (`Support`).

        Returns the fraud logit (B,), per-token surprise logits (B, T) (padding = -inf),
        and the attention weights of each layer, [(B, nh, T, T)] * n_layers (with
        `attention` False: maybe fewer, maybe none, and a faster pass).
        """
        pad = values == 0  # (B, T)
        pos = torch.arange(values.shape[1], device=values.device)
        back = self.line_offsets[fields]  # (B, T) positions back to the line's head, 0 = none
        head = values.gather(1, (pos - back).clamp(min=0))  # (B, T) the line's code id
        line = self.line(head) * (back > 0).unsqueeze(-1)
        readings, applies = self.support(values)  # (B, T, READINGS) each
        x = (self.codes(values) + self.field(fields) + self.position(pos) + line
             + self.support.embed(readings, applies))  # (B, T, C)
        # the blocks run in their norms' dtype (`blocks_in`; fp32 under `blocks_int8`);
        # embeddings and heads in fp32
        dtype = self.blocks[0].ln1.weight.dtype
        x = self.drop(x).to(dtype)
        mask = torch.zeros(pad.shape, device=x.device, dtype=dtype).masked_fill(
            pad, float("-inf"))[:, None, None, :]  # (B, 1, 1, T)
        attentions = []
        for block in self.blocks:
            x, att = block(x, mask, attention)
            if att is not None:
                attentions.append(att)
        x = self.ln_f(x.float())
        h = torch.cat([x[:, 0], Support.weakest(readings, applies)], dim=-1)  # [CLS] at 0
        fraud = self.fraud(h).squeeze(-1)
        surprise = self.surprise(x).squeeze(-1).masked_fill(pad, float("-inf"))
        return fraud, surprise, attentions

    def codes(self, values: torch.Tensor) -> torch.Tensor:
        """(B, T, C) each token's own vector plus its ancestors'. Out of training (for
        inference: no gradient reaches the table) the sums come from a table made once per
        set of weights: B x T x levels lookups were ~15% of a forward pass on a CPU."""
        if self.training:
            ancestors = self.group_of[values]  # (B, T, levels)
            own = self.value(values)
            if self.cfg.value_dropout:
                drop = (ancestors > 0).any(dim=2) & (
                    torch.rand(values.shape, device=values.device) < self.cfg.value_dropout)
                own = own.masked_fill(drop.unsqueeze(-1), 0.0)
            return own + self.group(ancestors).sum(dim=2)
        made_from = tuple((t.data_ptr(), t._version, t.device, t.dtype) for t in (
            self.value.weight, self.group.weight, self.group_of))
        if self._codes_from != made_from:  # new or changed weights (a load, forget_unseen)
            with torch.no_grad():
                self._codes = self.value.weight + self.group(self.group_of).sum(dim=1)
            self._codes_from = made_from
        return F.embedding(values, self._codes)

    @torch.no_grad()
    def unseen_tokens(self) -> torch.Tensor:
        """(vocab,) which token ids `forget_unseen` zeroed: those training never showed
        (none for a model that has not forgotten any)."""
        unseen = (self.value.weight == 0).all(dim=1)
        unseen[0] = False  # padding
        return unseen

    @torch.no_grad()
    def forget_unseen(self, seen: torch.Tensor) -> int:
        """Zero the own vectors of the tokens not in `seen` (ids training never showed),
        and of the ancestors none of them has: an unseen code then reads as its
        ancestors alone, as `value_dropout` trained the model to read it, not as the
        random vector it was initialised with. Returns how many tokens were zeroed."""
        unseen = torch.ones(self.cfg.vocab_size, dtype=torch.bool)
        unseen[seen] = False
        unseen[0] = False  # padding
        used = torch.zeros_like(unseen)
        used[self.group_of[seen].flatten()] = True
        self.value.weight[unseen] = 0.0
        self.line.weight[unseen] = 0.0
        self.group.weight[~used] = 0.0
        return int(unseen.sum())

    def blocks_in(self, dtype: torch.dtype) -> ClaimFormer:
        """The encoder blocks' weights (and so their activations) in `dtype`, for
        inference in bf16; the embeddings, the context table, the final norm and both
        heads stay fp32. On a CPU with AVX512-BF16 a forward pass is ~15% faster than
        under autocast, which converts every block's inputs and weights on each pass."""
        self.blocks.to(dtype)
        return self

    def blocks_int8(self) -> ClaimFormer:
        """The encoder blocks' linear layers dynamically quantised to int8 (weights int8
        per tensor, activations quantised per batch by fbgemm/oneDNN), the rest fp32: for
        CPUs without AMX, where it costs ~35% less than fp32 a forward pass here and
        changes ~0.05% of decisions (docs/operations.md). torch.ao's dynamic quantisation is
        deprecated upstream but works in the torch this project pins; its warnings say so
        and are silenced here, once, where it is used."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.blocks = torch.ao.quantization.quantize_dynamic(
                self.blocks, {nn.Linear}, dtype=torch.qint8)
        return self

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @contextmanager
    def ablate_head(self, layer: int, head: int) -> Iterator[None]:
        """Within the block, head `head` of layer `layer` contributes nothing (its output
        is zeroed before the projection): `claimscope eval`'s head ablation."""
        attn = self.blocks[layer].attn
        attn.ablated = head
        try:
            yield
        finally:
            attn.ablated = None


def read_claims(model: ClaimFormer, values: torch.Tensor, fields: torch.Tensor,
                attention: bool = False) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """What scoring reads from a forward pass (training's model selection and calibration,
    `Scorer.raw`): the fraud logits (B,), the surprise logits (B, T) with [CLS] at -inf as
    padding is, since it is not claim content, and the attentions if asked for."""
    fraud, surprise, attentions = model(values, fields, attention)
    surprise[:, 0] = float("-inf")
    return fraud, surprise, attentions


def replaced_token_loss(surprise: torch.Tensor, replaced: torch.Tensor, pad: torch.Tensor
                        ) -> torch.Tensor:
    """BCE of the surprise head against which tokens were swapped, over real tokens."""
    keep = ~pad
    return F.binary_cross_entropy_with_logits(surprise[keep], replaced[keep].float())
