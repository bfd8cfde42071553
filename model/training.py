"""Train a ClaimFormer on generated claims: supervised fraud head + self-supervised surprise.

Each step takes two batches:
- a labelled batch (training mix, `fraud_rate` 25% so the head sees enough of each
  pattern) for the fraud head's binary cross-entropy. Only single-claim patterns: a
  duplicate or a velocity burst looks like a normal claim on its own (the cross-claim
  checks catch those), so training the head on them would teach it noise;
- an unlabelled batch from a separate stream at the realistic 5% fraud rate, whose labels
  are never read: a share `replace_rate` of its tokens is swapped for another value of the
  same field and the surprise head learns to find them (replaced-token detection). Fraud
  in that stream is contamination the head must live with, as it would in production.

Validation every `eval_every` steps on a fixed 5%-fraud set; early stopping on PR-AUC with
`patience` evaluations; the best weights are kept. Then the score rule is calibrated on a
second held-out set (Platt scaling, threshold at best F1 but flagging at most FRAUD_FPR of
clean held-out claims), and snapshots of head
specialisation taken during training go into the checkpoint's metrics.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import precision_recall_curve

from model.checkpoint import Calibration, Checkpoint
from model.checks import CheckLimits, fit_limits
from model.claims import Claim
from model.dataset import ClaimSet, make_claim_set
from model.generator import CLEAN, SERIES, SINGLE_CLAIM_PATTERNS, ClaimGenerator
from model.metrics import auroc, pr_auc
from model.progress import progress_bar
from model.score import ANOMALY_FPR, ANOMALY_FPRS
from model.specialisation import head_snapshot
from model.tokenizer import (
    FIELDS,
    HEADER,
    LINE_OFFSET,
    MAX_DIAGNOSES,
    PREFIX,
    ClaimTokenizer,
)
from model.transformer import (
    PRESETS,
    ClaimFormer,
    ClaimFormerConfig,
    Support,
    read_claims,
    replaced_token_loss,
)
from model.vocabulary import Vocabulary, default_vocabulary


@dataclass
class TrainConfig:
    preset: str = "default"
    steps: int = 2500
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.01
    train_count: int = 60_000
    val_count: int = 8_000
    fraud_rate: float = 0.25  # training mix
    replace_rate: float = 0.15  # share of tokens swapped for the surprise head
    # per header field, line code, line charge (Replacer.blank); at 0.05 an unknown
    # specialty raised false alarms on hand-written care (docs/model.md)
    blank_rate: float = 0.1
    eval_every: int = 250
    patience: int = 4
    seed: int = 1234
    holdout_pattern: str | None = None  # train without it (novelty evaluation)
    heldout_share: float = 0.1  # of listed codes per field never generated (heldout_codes)
    threads: int = 2
    device: str = "cpu"  # "cuda" trains on a GPU; the checkpoint is the same either way
    model_overrides: dict | None = None  # e.g. {"n_layers": 1, "n_heads": 2} for sweeps


FRAUD_FPR = 0.005  # clean claims the fraud model's threshold may flag at most (calibrate)


def snapshot_steps(steps: int) -> list[int]:
    """0 and log-spaced steps to the end: 0, 10, 30, 100, 300, ... , steps."""
    out = [0]
    s = 10.0
    while s < steps:
        out.append(int(s))
        s *= math.sqrt(10)
    return sorted({*out, steps})


class Replacer:
    """Swaps tokens for random values of the same field (replaced-token detection), and
    reads listed diagnoses through their ICD-10-CM ancestors (augmentation).

    Replacements are uniform over a field's values, except codes: a replacement is a
    listed code, read through its ancestor at the share of ancestor tokens its field has in
    the stream itself. Drawn uniformly over codes and ancestors, replacements are ancestor
    tokens far more often than the stream's tokens are, and the surprise head learns that
    reading through an ancestor is itself suspicious: clean claims with unlisted codes,
    which read as their ancestors, then fire the anomaly channel. A range token
    (`proc:[...]`) is never drawn as a replacement of its own: drawn, but never seen in
    data, it would read as "replaced" wherever an unlisted code shows it.
    (Measurements: docs/model-history.md.)"""

    CODES = ("diagnosis", "procedure")  # the fields whose values have ancestor tokens
    HEADER = ("age", "sex", "specialty")  # what a feed without reference data may not know

    def __init__(self, tok: ClaimTokenizer, vocab: Vocabulary, sample: ClaimSet,
                 augment: float = 0.1, blank: float = TrainConfig.blank_rate) -> None:
        """`sample`: claims whose share of ancestor tokens the replacements match;
        `augment`: the share of listed codes read through their ancestor in training
        batches (`read_through`); `blank`: per header field, per line's code and per line's
        charge, the share read unknown (`blank`). A claim's diagnoses are not blanked:
        `dx:[OOV]`, what unknown diagnoses read as, stays a token training never shows
        (zeroed by `ClaimFormer.forget_unseen`: it adds nothing), so such a claim is read
        on its other tokens."""
        # header field -> the token a claim that does not know it reads as (model.claims):
        # age and specialty their field's unknown token, sex "U"
        self.unknown = torch.zeros(len(FIELDS), dtype=torch.long)
        for f in self.HEADER:
            self.unknown[FIELDS.index(f)] = tok.ids["sex"]["U"] if f == "sex" else tok.oov[f]
        self.blank_rate = blank
        # a line's code and charge unknown: their fields' unknown tokens
        self.line_unknown = (tok.oov["procedure"], tok.oov["proc_charge"])
        dx_ids, proc_ids = tok.ids["diagnosis"], tok.ids["procedure"]
        # tokens only an unlisted code reads as: categories and subcategories no listed
        # diagnosis is, and CPT/HCPCS range tokens
        listed = {dx_ids[c] for c in vocab.diagnoses if c in dx_ids}
        ancestor = np.zeros(len(tok.tokens), dtype=bool)
        ancestor[[i for i in dx_ids.values() if i not in listed]] = True
        ancestor[[i for v, i in proc_ids.items() if v.startswith("[")]] = True
        ancestor[[tok.oov[f] for f in self.CODES]] = False
        # listed code -> the token an unlisted code of its family reads as: a diagnosis's
        # nearest ancestor, where its siblings read as it does
        # (`Vocabulary.sibling_reads_alike`), a procedure's CPT/HCPCS range
        through = np.zeros(len(tok.tokens), dtype=np.int64)
        for c in vocab.diagnoses:
            up = tok.diagnosis_ancestor(c)
            if c in dx_ids and up and vocab.sibling_reads_alike(c):
                through[dx_ids[c]] = up
        for c in vocab.procedures:
            if c in proc_ids and (up := tok.procedure_range(c)):
                through[proc_ids[c]] = up
        pools = [[i for i, t in enumerate(tok.tokens) if f in PREFIX
                  and t.startswith(PREFIX[f] + ":") and not t.endswith("[OOV]")
                  and not ancestor[i]] or [0] for f in FIELDS]
        width = max(len(p) for p in pools)
        self.pool = torch.tensor([p + [0] * (width - len(p)) for p in pools])
        self.n = torch.tensor([len(p) for p in pools])
        self.through = torch.from_numpy(through)
        self.augment = augment
        # per field: how often a drawn code reads through, so that replaced tokens are
        # ancestor tokens as often as the stream's are after `read_through`
        self.replace_share = torch.zeros(len(FIELDS))
        for f in self.CODES:
            k = FIELDS.index(f)
            values = sample.values[sample.fields == k]
            natural = ancestor[values].mean() if len(values) else 0.0
            own = values[~ancestor[values]]
            eligible = (through[own] > 0).mean() if len(own) else 0.0
            stream = natural + augment * (1 - natural) * eligible
            drawn = (through[pools[k]] > 0).mean()
            self.replace_share[k] = float(min(1.0, stream / drawn)) if drawn else 0.0
        # tokens training shows besides the data's own: read-through targets, the unknown
        # tokens `blank` writes, and the replacements of fields without ancestors (a charge
        # bucket no clean claim has is learned as "replaced", which is what it should read
        # as); a code shown only as a replacement is forgotten instead, so that it reads as
        # its family
        family = np.array([any(g) for g in tok.groups])
        pool = self.pool.flatten().numpy()
        blanks = np.array([*self.unknown[self.unknown > 0].tolist(), *self.line_unknown]
                          if blank > 0 else [], dtype=np.int64)
        self.seen = np.unique(np.concatenate([through, pool[~family[pool]], blanks]))

    def read_through(self, values: torch.Tensor, p: float | torch.Tensor, gen: torch.Generator
                     ) -> torch.Tensor:
        """Each listed code with a family reading (`through`) becomes that ancestor's token
        with probability `p` (a number, or one per position): what an unlisted code of its
        family reads as."""
        up = self.through[values]
        flip = (up > 0) & (torch.rand(values.shape, generator=gen) < p)
        return torch.where(flip, up, values)

    def blank(self, values: torch.Tensor, fields: torch.Tensor, gen: torch.Generator,
              lines: bool = True) -> torch.Tensor:
        """Each header token (age, sex, specialty) becomes its unknown token with
        probability `blank_rate`, as a claim from a feed without reference data reads: so
        the model learns what an unknown is, rather than meeting a token it rarely saw. On
        a labelled batch the label stays (a fraud that hides its member is still fraud).
        With `lines`, so does each service line's code (with its price, which without a
        code has nothing to be read against), as a line coded in SNOMED CT reads, and each
        line's charge alone, as an inpatient EOB that states only its total reads.
        `train_step` blanks lines in the self-supervised batch only: in a labelled fraud
        the blanked line is often the evidence, and a fraud label on a claim without its
        evidence cost the yardstick 0.016 of PR-AUC (docs/model.md)."""
        header = self.unknown[fields] > 0
        flip = header & (torch.rand(values.shape, generator=gen) < self.blank_rate)
        out = torch.where(flip, self.unknown[fields], values)
        if not lines:
            return out
        code = (fields == FIELDS.index("procedure")) & (
            torch.rand(values.shape, generator=gen) < self.blank_rate)
        out = torch.where(code, self.line_unknown[0], out)
        price = fields == FIELDS.index("proc_charge")
        price &= torch.roll(code, LINE_OFFSET["proc_charge"], dims=1) | (
            torch.rand(values.shape, generator=gen) < self.blank_rate)
        return torch.where(price, self.line_unknown[1], out)

    def __call__(self, values: torch.Tensor, fields: torch.Tensor, rate: float,
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        content = (values != 0) & (fields != FIELDS.index("cls"))
        pick = (torch.rand(values.shape, generator=gen) < rate) & content
        offs = (torch.rand(values.shape, generator=gen) * self.n[fields]).long()
        drawn = self.read_through(self.pool[fields, offs], self.replace_share[fields], gen)
        swapped = torch.where(pick, drawn, values)
        return swapped, swapped != values


@dataclass
class PairTable:
    """Smoothed PMI of (context token, code token) pairs over a set of claims: what the
    model's `Support` reads."""

    row: np.ndarray  # (vocab,) token id -> context row, 0 = not context
    kind: np.ndarray  # (vocab,) token id -> Support.DIAGNOSIS ... SEX, 0 = not context
    col: np.ndarray  # (vocab,) token id -> code column, 0 = not a code
    line: np.ndarray  # (vocab,) bool: a procedure or drug, which a diagnosis must justify
    pmi: np.ndarray  # (rows, cols) float16

    @property
    def rows(self) -> int:
        return self.pmi.shape[0]

    @property
    def cols(self) -> int:
        return self.pmi.shape[1]

    def load_into(self, model: ClaimFormer) -> None:
        for name in ("row", "kind", "col", "line", "pmi"):
            getattr(model.support, name).copy_(torch.from_numpy(getattr(self, name)))


def pair_table(tok: ClaimTokenizer, data: ClaimSet) -> PairTable:
    """PMI of (context, code) over the claims of `data`, each pair counted once a claim,
    as log (observed + 1) / (expected + 1) co-occurrences: a pair never seen where 50 were
    expected reads -3.9 ("does not go with it"), one never seen where 0.01 were expected
    (a rare code, a rare context) reads 0, as does every pair of a token `data` never
    shows (they share row or column 1, all zeros). Not log P(code | context) / P(code)
    smoothed towards P(code): with many claims of the context, that reads any rare code as
    impossible.

    A diagnosis counts as its ICD-10-CM category (`E11.9` as `E11`): one code of a
    category is on few claims, the category on many (docs/model.md)."""
    n = len(tok.tokens)
    key = np.arange(n)  # the token whose counts a token reads
    dx = list(tok.ids["diagnosis"].values())
    key[dx] = [tok.groups[t][1] or t for t in dx]
    shown = np.zeros(n, dtype=bool)
    shown[np.unique(key[data.values])] = True
    # a code the claims never show reads as its nearest relative they do: a procedure as
    # its CPT/HCPCS range's reading, a drug as the first of its class (codes never seen
    # are no evidence: read as "no data", 0, they look like a code nothing justifies, and
    # clean claims with a held-out code get flagged; docs/model-history.md)
    by_class: dict[int, int] = {}
    for t in tok.ids["drug"].values():
        if shown[t]:
            by_class.setdefault(tok.groups[t][0], t)
    for t in tok.ids["procedure"].values():
        near = tok.procedure_range(tok.tokens[t].partition(":")[2])
        if not shown[t] and near is not None and shown[near]:
            key[t] = near
    for t in tok.ids["drug"].values():
        if not shown[t] and tok.groups[t][0] in by_class:
            key[t] = by_class[tok.groups[t][0]]
    row, kind, col = (np.zeros(n, dtype=np.int64) for _ in range(3))
    line = np.zeros(n, dtype=bool)
    line[[*tok.ids["procedure"].values(), *tok.ids["drug"].values()]] = True

    def number(index: np.ndarray, ids: list[int], start: int) -> int:
        """Rows or columns from `start`, one per shown key of `ids`; tokens whose key no
        claim shows share 1 (no data)."""
        keys = sorted({int(key[i]) for i in ids if shown[key[i]]})
        at = dict(zip(keys, range(start, start + len(keys)), strict=True))
        index[ids] = [at.get(int(key[i]), 1) for i in ids]
        return start + len(keys)

    rows = 2
    for k, field in ((Support.DIAGNOSIS, "diagnosis"), (Support.SPECIALTY, "specialty"),
                     (Support.AGE, "age"), (Support.SEX, "sex")):
        ids = list(tok.ids[field].values())
        rows = number(row, ids, rows)
        kind[ids] = k
    cols = number(col, [*dx, *tok.ids["procedure"].values(), *tok.ids["drug"].values()], 2)

    def onehot(index: np.ndarray, width: int) -> sparse.csr_matrix:
        pos = index[data.values]  # (N, T)
        i, t = np.nonzero(pos > 1)
        m = sparse.csr_matrix((np.ones(len(i)), (i, pos[i, t])), shape=(len(data), width))
        m.data[:] = 1.0  # a pair counts once a claim
        return m

    ctx, code = onehot(row, rows), onehot(col, cols)
    both = (ctx.T @ code).toarray()  # claims with the context and the code
    expected = (np.asarray(ctx.sum(axis=0)).ravel()[:, None]
                * np.asarray(code.sum(axis=0)).ravel()[None, :] / max(1, len(data)))
    pmi = np.log((both + 1.0) / (expected + 1.0))
    return PairTable(row, kind, col, line, pmi.astype(np.float16))


def length_batches(data: ClaimSet, batch: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Endless batches of claims of similar token length (little padding), in random order."""
    lengths = (data.values != 0).sum(axis=1)
    batch = min(batch, len(data))
    while True:
        order = np.argsort(lengths + rng.uniform(0, 4, len(lengths)))
        chunks = [order[i:i + batch] for i in range(0, len(order) - batch + 1, batch)]
        rng.shuffle(chunks)
        yield from chunks


def metrics_of(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    if labels.min() == labels.max():
        return {"auroc": float("nan"), "pr_auc": float("nan")}
    return {"auroc": auroc(labels, scores),
            "pr_auc": pr_auc(labels, scores)}


@torch.inference_mode()
def predict(model: ClaimFormer, data: ClaimSet, batch: int = 512
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fraud logits, anomaly logits, every token's largest surprise logit) for every claim
    in `data`. The anomaly logit is the largest among the tokens whose code training showed
    (`model.scorer.Raw.anomaly_logit`); the last reads every token, and is never below it."""
    model.eval()
    dev = next(model.parameters()).device
    unseen = model.unseen_tokens().to(dev)
    fl, an, peak = [], [], []
    for s in range(0, len(data), batch):
        v, f = data.batch(np.arange(s, min(s + batch, len(data))), dev)
        fraud, surprise, _ = read_claims(model, v, f)
        fl.append(fraud.float().cpu().numpy())
        an.append(surprise.masked_fill(unseen[v], float("-inf")).max(dim=1).values
                  .float().cpu().numpy())
        peak.append(surprise.max(dim=1).values.float().cpu().numpy())
    return np.concatenate(fl), np.concatenate(an), np.concatenate(peak)


def train_step(model: ClaimFormer, opt: torch.optim.Optimizer,
               labelled: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
               unlabelled: tuple[torch.Tensor, torch.Tensor], replacer: Replacer, rate: float,
               gen: torch.Generator) -> None:
    """One optimiser step on both heads: the fraud head's cross-entropy on a labelled
    batch (values, fields, labels; none: self-supervised only) plus the surprise head's
    replaced-token loss on an unlabelled batch (values, fields) with `rate` of its tokens
    swapped. In both, some listed codes read through their family's ancestor token, as
    unlisted codes do (`Replacer.read_through`), and some header fields read as unknown
    (`Replacer.blank`); in the unlabelled batch, some lines' codes and charges too.
    Shared by training and retraining (`model.retrain`)."""
    dev = next(model.parameters()).device
    model.train()
    loss = torch.zeros((), device=dev)
    if labelled is not None:
        v, f, y = labelled
        v = replacer.blank(replacer.read_through(v, replacer.augment, gen), f, gen,
                           lines=False)
        fraud, _, _ = model(v.to(dev), f.to(dev))
        loss = F.binary_cross_entropy_with_logits(fraud, y.to(dev))
    uv, uf = unlabelled
    uv = replacer.blank(replacer.read_through(uv, replacer.augment, gen), uf, gen)
    swapped, replaced = replacer(uv, uf, rate, gen)
    uf = uf.to(dev)
    _, surprise, _ = model(swapped.to(dev), uf)
    loss = loss + replaced_token_loss(surprise, replaced.to(dev), uf == 0)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()


def rtd_loss(model: ClaimFormer, data: ClaimSet, replacer: Replacer, cfg: TrainConfig,
             batch: int = 512) -> float:
    """The surprise head's replaced-token loss on `data`, with fixed replacements."""
    model.eval()
    dev = next(model.parameters()).device
    gen = torch.Generator().manual_seed(cfg.seed + 99)
    total = 0.0
    with torch.no_grad():
        for s in range(0, len(data), batch):
            v, f = data.batch(np.arange(s, min(s + batch, len(data))))
            swapped, replaced = replacer(v, f, cfg.replace_rate, gen)
            _, surprise, _ = model(swapped.to(dev), f.to(dev))
            total += float(replaced_token_loss(surprise, replaced.to(dev), f.to(dev) == 0)) * len(v)
    return round(total / max(1, len(data)), 5)


def anomaly_budgets(clean: np.ndarray) -> dict[str, tuple[float, ...]]:
    """The anomaly channel's cuts: the anomaly logit each budget of ANOMALY_FPRS leaves
    above it among clean held-out claims (`Calibration.anomaly_cut`)."""
    return {"anomaly_fprs": ANOMALY_FPRS,
            "anomaly_cuts": tuple(round(float(np.quantile(clean, 1 - f)), 4)
                                  for f in ANOMALY_FPRS)}


def calibrate(model: ClaimFormer, data: ClaimSet, clean: ClaimSet
              ) -> tuple[Calibration, dict]:
    """Fit the score rule on held-out claims; threshold = best F1 of the combined score,
    but never below the cut that leaves FRAUD_FPR of `clean` above it: what an
    investigator is sent stays bounded however well the model separates the patterns
    (best F1 alone follows a model that cannot tell a pattern into flagging many clean
    claims; docs/model-history.md). The anomaly cuts come from `clean` too
    (held-out claims not known to be fraud, `anomaly_history` for generated data), as
    quantiles of the surprise over every token: the anomaly logit is never above that, so
    a cut flags at most its budget of clean claims however many carry codes training never
    showed (a cut taken from the anomaly logit itself sits lower, and flags more everyday
    care: docs/model.md has the figures). Without
    both classes in `data` there is no fraud model to calibrate: the threshold is 1, so
    only the anomaly channel and the checks flag."""
    fraud, anomaly, _ = predict(model, data) if len(data) else (np.zeros(0),) * 3
    y = data.labels
    clean_fraud, clean_anomaly, clean_peak = predict(model, clean)
    budgets = anomaly_budgets(clean_peak)
    if len(y) == 0 or y.min() == y.max():
        cut = Calibration(**budgets).anomaly_cut(ANOMALY_FPR)
        return Calibration(fraud_a=0.0, fraud_c=-20.0, a=0.0, b=1.0, c=-cut, threshold=1.0,
                           **budgets), {"auroc": float("nan"), "pr_auc": float("nan")}
    one = LogisticRegression(C=100.0).fit(fraud[:, None], y)
    both = LogisticRegression(C=100.0).fit(np.stack([fraud, anomaly], axis=1), y)
    combined = both.predict_proba(np.stack([fraud, anomaly], axis=1))[:, 1]
    prec, rec, thr = precision_recall_curve(y, combined)
    f1 = 2 * prec * rec / np.maximum(prec + rec, 1e-9)
    best = int(np.nanargmax(f1[:-1]))
    on_clean = both.predict_proba(np.stack([clean_fraud, clean_anomaly], axis=1))[:, 1]
    bound = float(np.quantile(on_clean, 1 - FRAUD_FPR)) if len(on_clean) else 0.0
    cal = Calibration(fraud_a=float(one.coef_[0, 0]), fraud_c=float(one.intercept_[0]),
                      a=float(both.coef_[0, 0]), b=float(both.coef_[0, 1]),
                      c=float(both.intercept_[0]),
                      threshold=round(max(float(thr[best]), bound), 4), **budgets)
    return cal, {"calibration_f1": float(f1[best]), **metrics_of(y, combined)}


def history_limits(count: int, seed: int) -> CheckLimits:
    """What the cross-claim checks take as normal (`model.checks.fit_limits`), learned
    from a generated history with every pattern in it, as a worker's stream has, its
    labelled-clean claims counting."""
    items = list(ClaimGenerator(seed=seed, fraud_rate=0.05, size=count).generate(count))
    return fit_limits([Claim.model_validate(x.claim) for x in items],
                      [x.fraud_pattern == CLEAN for x in items])


@dataclass
class TrainingData:
    """What one training run learns from and is measured on."""

    labelled: ClaimSet  # the fraud head's claims (may be empty: no supervised head)
    unlabelled: ClaimSet  # the surprise head's claims (labels never read)
    val: ClaimSet  # held out, labelled: model selection (RTD loss without both classes)
    cal: ClaimSet  # held out, labelled: calibration and the metrics reported
    clean: ClaimSet  # held out, not known fraud: the anomaly cuts
    counted: ClaimSet  # what the context table is counted from (`pair_table`)
    limits: CheckLimits  # what the cross-claim checks take as normal
    tokenizer: ClaimTokenizer  # what the sets were encoded with
    source: dict  # what the checkpoint records about where the claims came from


def heldout_codes(v: Vocabulary, share: float, seed: int) -> dict[str, list[str]]:
    """A seeded `share` of the listed diagnosis codes, procedure codes and drug names, per
    field, that training never shows: `claimscope eval` then measures false positives on
    claims that carry them against claims that do not (codes a model never saw must be no
    evidence of fraud). Left out of the draw: what the generator's structure needs (visit
    codes, venipuncture, panels and their components, the series of frequent care)."""
    rng = random.Random(seed)
    series = {c for s in SERIES for c in (*s.diagnoses, *s.also, *s.codes)}
    bundled = set(v.bundles) | {c for parts in v.bundles.values() for c in parts}
    pools = {
        "diagnosis": sorted(c for c in v.diagnoses if c not in series),
        "procedure": sorted(c for c, q in v.procedures.items()
                            if not q.em_level and c not in series | bundled | {"36415"}),
        "drug": sorted(v.drugs)}
    return {f: sorted(rng.sample(pool, round(share * len(pool)))) for f, pool in pools.items()}


def heldout_set(training: dict) -> frozenset[str]:
    """Every code a checkpoint's training record (`Checkpoint.training`) says it held out."""
    return frozenset(c for codes in (training.get("heldout") or {}).values() for c in codes)


def generated_data(cfg: TrainConfig, tok: ClaimTokenizer, log=print) -> TrainingData:
    """The demo model's data: the generator at the config's seeds (seed .. seed + 3),
    never billing the held-out codes (`heldout_codes`)."""
    patterns = tuple(p for p in SINGLE_CLAIM_PATTERNS if p != cfg.holdout_pattern)
    held = heldout_codes(default_vocabulary(), cfg.heldout_share, cfg.seed)
    out = frozenset(c for codes in held.values() for c in codes)
    log(f"generating {cfg.train_count:,} labelled + {cfg.train_count:,} unlabelled claims "
        f"without {len(out):,} held-out codes")
    limits = history_limits(cfg.train_count, cfg.seed + 1)
    unlabelled = make_claim_set(tok, cfg.train_count, cfg.seed + 1, 0.05, patterns, out)
    # validation and calibration see the world a worker scores, held-out codes included:
    # an insurer's cuts come from its own traffic, full of codes training never showed
    return TrainingData(
        make_claim_set(tok, cfg.train_count, cfg.seed, cfg.fraud_rate, patterns, out),
        unlabelled, make_claim_set(tok, cfg.val_count, cfg.seed + 2, 0.05, patterns),
        *calibration_sets(tok, cfg.val_count, cfg.seed, patterns), unlabelled, limits, tok,
        {"source": "generator", "patterns": list(patterns), "heldout": held})


def calibration_sets(tok: ClaimTokenizer, count: int, seed: int, patterns: tuple[str, ...]
                     ) -> tuple[ClaimSet, ClaimSet]:
    """What a generated run calibrates on (its seed + 3): `count` labelled claims at 5%
    fraud for the score rule, and the clean claims of a stream five times that size for
    the anomaly cuts (`anomaly_history`)."""
    return (make_claim_set(tok, count, seed + 3, 0.05, patterns),
            anomaly_history(tok, 5 * count, seed + 3))


def recalibrate(ck: Checkpoint) -> tuple[Calibration, dict]:
    """The score rule of a checkpoint trained on generated claims, fitted again (`calibrate`)
    on the claims it was calibrated on, rebuilt from its training record; the weights stay
    as they are. For a change in how the scorer reads the model's outputs (2026-12-05: the
    anomaly logit over the tokens whose code training showed, docs/model.md). ValueError
    for a checkpoint trained on an insurer's claims: those are not ours to rebuild."""
    t = ck.training
    if t.get("source") != "generator":
        raise ValueError(f"checkpoint {ck.model_version} was not trained on generated claims "
                         f"(source {t.get('source')!r}): retrain it on its own history")
    cal, clean = calibration_sets(ck.tokenizer, t["val_count"], t["seed"], tuple(t["patterns"]))
    return calibrate(ck.model.eval(), cal, clean)


def anomaly_history(tok: ClaimTokenizer, count: int, seed: int) -> ClaimSet:
    """The clean claims of a generated stream with every pattern in it, as a worker sees:
    the anomaly channel's cuts come from these: the far tail of the anomaly logit grows
    with the stream and with the cross-claim patterns, so cuts from the calibration set
    alone (single-claim patterns only) let through more than the budget on a worker's
    stream (docs/model-history.md)."""
    data = make_claim_set(tok, count, seed, 0.05)
    return data.subset(data.labels == 0)


def train(cfg: TrainConfig, log=print, data: TrainingData | None = None) -> Checkpoint:
    """Train, validate, calibrate; returns an in-memory checkpoint (see `save_checkpoint`).
    Without `data`, on generated claims (`generated_data`)."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    started = time.monotonic()
    data = data or generated_data(cfg, ClaimTokenizer.from_vocabulary(default_vocabulary()), log)
    tok = data.tokenizer
    train_set, unlabelled, val, cal_set = data.labelled, data.unlabelled, data.val, data.cal
    supervised = len(train_set) > 0
    selects_by_labels = len(val) > 0 and 0 < val.labels.sum() < len(val)
    pairs = pair_table(tok, data.counted)
    mcfg = ClaimFormerConfig(vocab_size=len(tok.tokens), n_fields=len(FIELDS),
                             line_offsets=tuple(LINE_OFFSET.get(f, 0) for f in FIELDS),
                             group_levels=len(tok.groups[0]), value_dropout=0.1,
                             pair_rows=pairs.rows, pair_cols=pairs.cols,
                             context_width=HEADER + MAX_DIAGNOSES,
                             **{**PRESETS[cfg.preset], **(cfg.model_overrides or {})})
    model = ClaimFormer(mcfg)
    model.group_of.copy_(torch.tensor(tok.groups))
    pairs.load_into(model)
    dev = torch.device(cfg.device)
    model.to(dev)
    log(f"model: {mcfg.n_layers} layers, {mcfg.n_heads} heads, d_model {mcfg.d_model}, "
        f"{model.n_params():,} parameters")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # a tenth of the steps to warm up; OneCycleLR divides by that warm-up less one step,
    # so a warm-up of exactly one step (10 steps in all) would divide by zero
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps,
                                                pct_start=0.2 if cfg.steps == 10 else 0.1)
    replacer = Replacer(tok, default_vocabulary(), unlabelled, blank=cfg.blank_rate)
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    labelled_batches = length_batches(train_set, cfg.batch_size, rng) if supervised else None
    unlabelled_batches = length_batches(unlabelled, cfg.batch_size, rng)
    shown = val if len(val) else unlabelled
    probe = shown.subset(np.arange(len(shown)) < 1000)  # small fixed set for head snapshots
    held = val if selects_by_labels else unlabelled.subset(np.arange(len(unlabelled)) < 2000)
    snaps, snap_at = [], set(snapshot_steps(cfg.steps))
    history: list[dict] = []
    best = {"quality": -math.inf, "step": 0, "state": None}
    bad_evals = 0
    with progress_bar("training", total=cfg.steps) as advance:
        for step in range(cfg.steps + 1):
            if step in snap_at:
                snaps.append(head_snapshot(model, probe, step))
            if step % cfg.eval_every == 0 or step == cfg.steps:
                if selects_by_labels:
                    m = {"step": step, **metrics_of(val.labels, predict(model, val)[0])}
                    log(f"step {step}: val auroc {m['auroc']:.4f} pr_auc {m['pr_auc']:.4f}")
                    quality = m["pr_auc"]
                else:  # no labels to select by: the surprise head's loss on held claims
                    m = {"step": step, "rtd_loss": rtd_loss(model, held, replacer, cfg)}
                    log(f"step {step}: held-out replaced-token loss {m['rtd_loss']:.4f}")
                    quality = -m["rtd_loss"]
                m["elapsed_s"] = round(time.monotonic() - started, 1)
                history.append(m)
                if quality > best["quality"]:
                    best = {"quality": quality, "step": step,
                            "state": {k: v.clone() for k, v in model.state_dict().items()}}
                    bad_evals = 0
                elif step > 0:
                    bad_evals += 1
                    if bad_evals >= cfg.patience:
                        log(f"early stop at step {step}: best at step {best['step']}")
                        break
            if step == cfg.steps:
                break
            labelled = None
            if labelled_batches is not None:
                idx = next(labelled_batches)
                labelled = (*train_set.batch(idx), torch.from_numpy(train_set.labels[idx]))
            train_step(model, opt, labelled, unlabelled.batch(next(unlabelled_batches)),
                       replacer, cfg.replace_rate, gen)
            sched.step()
            advance(1)
    model.load_state_dict(best["state"])
    model.cpu().eval()
    # what the data showed the model as itself (replacements only teach "replaced")
    seen = np.unique(np.concatenate([train_set.values.ravel(), unlabelled.values.ravel(),
                                     replacer.seen]))
    log(f"{model.forget_unseen(torch.from_numpy(seen)):,} of {len(tok.tokens):,} tokens never "
        "seen in training: they read as their ancestors alone")
    cal, cal_metrics = calibrate(model, cal_set, data.clean)
    log(f"calibrated: threshold {cal.threshold}, held-out auroc {cal_metrics['auroc']:.4f} "
        f"pr_auc {cal_metrics['pr_auc']:.4f}")
    metrics = {"best_step": best["step"], "validation": history, "calibration": cal_metrics,
               "snapshots": snaps, "train_seconds": round(time.monotonic() - started, 1),
               "n_params": model.n_params(), "data": data.source}
    limits = data.limits
    log(f"cross-claim checks: velocity limit {limits.velocity_limit} visits in "
        f"{limits.window_days} days; {len(limits.per_kind)} series kinds of care; "
        f"{len(limits.repeat_codes)} repeatable codes")
    return Checkpoint(model, tok, cal, model_version="", metrics=metrics,
                      training={**asdict(cfg), **data.source}, check_limits=limits)
