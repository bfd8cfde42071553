"""Tokenizer, ClaimFormer, checkpoints, scorer and cross-claim checks (pure logic, CPU)."""

from __future__ import annotations

import datetime as dt
import json
import platform
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from model import scorer as scorer_module
from model.checkpoint import Calibration, CheckpointError, load_checkpoint, save_checkpoint
from model.checks import CheckLimits, CrossClaimChecks, MemoryState, fit_limits
from model.claims import Claim, claim_json
from model.dataset import make_claim_set
from model.explain import AS_A_WHOLE, NOTHING_UNUSUAL
from model.generator import CLEAN, ClaimGenerator
from model.quality.evaluate import CODES_OF
from model.score import ANOMALY_FPRS, CHANNELS
from model.scorer import Scorer, padded, plan_passes, resolve_precision
from model.tokenizer import (
    FIELD_ID,
    HEADER,
    MAX_DIAGNOSES,
    MAX_TOKENS,
    TYPICAL_RATIO,
    ClaimTokenizer,
    charge_bucket,
)
from model.training import (
    Replacer,
    TrainConfig,
    heldout_set,
    pair_table,
    recalibrate,
    snapshot_steps,
    train,
)
from model.transformer import ClaimFormer, Support
from model.vocabulary import default_vocabulary


def claims(n: int, seed: int = 5, fraud_rate: float = 0.2) -> list[Claim]:
    gen = ClaimGenerator(seed=seed, fraud_rate=fraud_rate, size=n)
    return [Claim.model_validate(x.claim) for x in gen.generate(n)]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A barely trained model: enough to exercise every code path, not to be accurate."""
    ck = train(TrainConfig(steps=6, train_count=1000, val_count=400, eval_every=3),
               log=lambda m: None)
    out = tmp_path_factory.mktemp("ck")
    save_checkpoint(ck, out)
    return out


@pytest.fixture(scope="module")
def tok() -> ClaimTokenizer:
    return ClaimTokenizer.from_vocabulary(default_vocabulary())


def test_unknown_codes_and_hostile_strings_go_to_oov(tok):
    base = claims(1)[0].model_dump(mode="json")
    base["diagnoses"] = ["Z99.89", "U07.1"]
    base["provider_specialty"] = "astrology"
    base["place_of_service"] = "99"
    base["medications"] = [{"name": "<script>alert(1)</script>\u202e\x00", "strength_mg": 1e5,
                            "quantity": 1, "days_supply": 1, "charge": 0}]
    base["total_charge"] = round(sum(float(p["charge"]) for p in base["procedures"]), 2)
    claim = Claim.model_validate(base)
    toks, _ = tok.tokens_of(claim)
    by_field = {t.field: t.value for t in toks}
    assert by_field["specialty"] == tok.oov["specialty"]
    assert by_field["place"] == tok.oov["place"]
    assert by_field["drug"] == tok.oov["drug"] and by_field["dose"] == tok.oov["dose"]
    assert by_field["drug_price"] != tok.oov["drug_price"]  # absolute bucket instead


def test_unseen_codes_read_as_their_nearest_ancestor_never_one_shared_token(tok):
    ids, oov = tok.ids["diagnosis"], tok.oov["diagnosis"]

    def ancestors(token_id: int) -> list[str]:
        return [tok.tokens[g] for g in tok.groups[token_id] if g]

    assert "E11.641" not in ids and "E11.65" in ids  # a listed sibling: E11.6 has a token
    assert tok._diagnosis("E11.641").value == ids["E11.6"]
    assert ancestors(ids["E11.6"]) == ["group:dx:E11.6", "group:dx:E11", "group:dx:E08-E13",
                                       "group:dx:chapter 4"]
    assert not any(c.startswith("A00") for c in default_vocabulary().diagnoses)
    cholera = tok._diagnosis("A00.0")  # a category no listed code is in still has a token
    assert cholera.value == ids["A00"]
    assert ancestors(cholera.value) == ["group:dx:A00-A09", "group:dx:chapter 1"]
    assert len({tok._diagnosis(c).value for c in ("A00.0", "E11.641", "K35.200")}) == 3
    assert tok._diagnosis("U99.9").value == oov  # no such ICD-10-CM category
    proc = tok._procedure("33533")  # an unlisted CABG code: its CPT range
    assert tok.tokens[proc.value] == "proc:[cardiovascular system]"
    assert ancestors(proc.value) == ["group:proc:range cardiovascular system",
                                     "group:proc:section surgery"]
    assert tok.tokens[tok._procedure("0042T").value] == "proc:[CPT category III]"
    assert tok._procedure("02000").value == tok.oov["procedure"]  # in no CPT range


def test_an_unlisted_procedures_charge_reads_as_typical(tok):
    """An unlisted CPT code has no reference price, so its charge reads as the ratio most
    listed lines have (not an absolute bucket no listed code ever shows, nor a ratio to
    some other code's price); a code of no range still reads in dollars."""
    c = claims(1)[0].model_dump(mode="json")
    c["procedures"] = [{"code": "33533", "units": 1, "charge": 900.0, "modifiers": []},
                       {"code": "02000", "units": 1, "charge": 900.0, "modifiers": []}]
    c["medications"], c["total_charge"] = [], 1800.0
    seq, _ = tok.tokens_of(Claim.model_validate(c))
    charges = [tok.tokens[t.value] for t in seq if t.field == "proc_charge"]
    assert charges == [f"charge:b{charge_bucket(900.0)}", f"charge:r{TYPICAL_RATIO}"]


@pytest.mark.parametrize("field", ["diagnosis", "procedure"])
def test_replacements_carry_the_streams_share_of_ancestor_tokens(tok, field):
    """A replaced code is an ancestor token (a category, a CPT range) as often as a real
    one is: otherwise the surprise head learns that reading through the code system is
    suspicious, and flags every claim with a code the list lacks."""
    sample = make_claim_set(tok, 3000, 5, 0.05)
    v = default_vocabulary()
    replacer = Replacer(tok, v, sample)
    listed = {tok.ids[field][c] for c in (v.diagnoses if field == "diagnosis" else v.procedures)}
    gen = torch.Generator().manual_seed(0)
    values, f = sample.batch(np.arange(3000))
    values = replacer.read_through(values, replacer.augment, gen)
    swapped, replaced = replacer(values, f, 0.3, gen)
    here = f == FIELD_ID[field]

    def ancestor_share(x: torch.Tensor) -> float:
        return float(np.mean([int(i) not in listed for i in x]))

    real = ancestor_share(values[here & ~replaced])
    drawn = ancestor_share(swapped[here & replaced])
    assert real > 0.05 and abs(drawn - real) < 0.03, (real, drawn)
    assert not replaced[f == FIELD_ID["cls"]].any()


def test_blanking_reads_header_fields_as_the_unknowns_a_feed_sends(tok):
    """Training reads some claims' age, sex and specialty as unknown, the tokens a claim
    with `"member_age": null`, `"member_sex": "U"`, `"provider_specialty": null` reads as;
    without lines (a labelled batch's blanking) nothing else changes, and each field is
    blanked on its own at about the rate asked. (Lines: tests/test_unknown_codes.py.)"""
    sample = make_claim_set(tok, 3000, 5, 0.05)
    replacer = Replacer(tok, default_vocabulary(), sample, blank=0.2)
    values, f = sample.batch(np.arange(3000))
    out = replacer.blank(values, f, torch.Generator().manual_seed(0), lines=False)
    changed = out != values
    blank = Claim.model_validate(claims(1)[0].model_dump() | {
        "member_age": None, "member_sex": "U", "provider_specialty": None})
    seq, _ = tok.tokens_of(blank)
    unknown = {t.field: t.value for t in seq if t.field in Replacer.HEADER}
    for field in Replacer.HEADER:
        here = f == FIELD_ID[field]
        assert set(out[here & changed].tolist()) == {unknown[field]}
        share = float((out[here] == unknown[field]).float().mean())
        assert 0.15 < share < 0.3, (field, share)
    assert not changed[~torch.isin(f, torch.tensor([FIELD_ID[x] for x in Replacer.HEADER]))
                       ].any()


def test_support_reads_what_the_history_shows(tok):
    """A drug the history never shows with a diagnosis, where many co-occurrences were
    expected, reads as unjustified; a drug of the diagnosis's area reads as justified; a
    token the history never shows reads 0 against everything (no evidence either way)."""
    v = default_vocabulary()
    data = make_claim_set(tok, 4000, 5, 0.0)
    t = pair_table(tok, data)
    i = tok.index
    dm = t.row[i["dx:E11.9"]]
    assert t.kind[i["dx:E11.9"]] == Support.DIAGNOSIS and t.kind[i["sex:F"]] == Support.SEX
    assert t.pmi[dm, t.col[i["drug:metformin"]]] > 0
    foreign = [d for d in v.drugs if d not in v.justified_drugs(["E11.9"])]
    assert min(t.pmi[dm, t.col[i[f"drug:{d}"]]] for d in foreign) < -1
    cholera = i["dx:A00"]  # no generated claim has it, nor any code of its category
    assert t.row[cholera] == 1 and t.col[cholera] == 1
    assert not t.pmi[1].any() and not t.pmi[:, 1].any()
    assert t.line[i["drug:metformin"]] and not t.line[i["dx:E11.9"]]
    # the model looks for context tokens in the header and the diagnoses only
    seq, _ = tok.tokens_of(data.claims[0])
    assert [x.field for x in seq[:HEADER]] == ["cls", "age", "sex", "specialty", "place", "total",
                                               "edits"]
    assert all(x.field != "diagnosis" for x in seq[HEADER + MAX_DIAGNOSES:])


def test_unseen_tokens_read_as_their_ancestors_alone(tiny_checkpoint):
    ck = load_checkpoint(tiny_checkpoint)
    m, tok = ck.model, ck.tokenizer
    cholera = tok.ids["diagnosis"]["A00"]
    assert not m.value.weight[cholera].any()  # never in training: its own vector is zero
    held = ck.training["heldout"]["diagnosis"]
    assert held
    assert not any(m.value.weight[tok.ids["diagnosis"][c]].any() for c in held)
    assert any(m.value.weight[i].any() for c, i in tok.ids["diagnosis"].items()
               if c in default_vocabulary().diagnoses)  # the listed codes training showed


def test_long_claims_are_truncated_whole_lines_first(tok):
    c = claims(1)[0].model_dump(mode="json")
    c["diagnoses"] = [f"E11.{i}" for i in range(10)] + ["I10", "E78.5"]
    c["procedures"] = [{"code": "99213", "units": 1, "charge": 100.0, "modifiers": []}] * 50
    c["medications"] = []
    c["total_charge"] = 5000.0
    toks, truncated = tok.tokens_of(Claim.model_validate(c))
    assert truncated and len(toks) <= MAX_TOKENS
    assert sum(t.field == "diagnosis" for t in toks) == 8
    assert sum(t.field == "procedure" for t in toks) == (MAX_TOKENS - 6 - 8) // 3


def test_encode_pads_and_aligns(tok):
    enc = tok.encode(claims(8))
    assert enc.values.shape == enc.fields.shape
    for row, n in zip(enc.values, enc.lengths, strict=True):
        assert (row[:n] != 0).all() and (row[n:] == 0).all()
    assert (enc.fields[:, 0] == FIELD_ID["cls"]).all()


def test_forward_shapes_and_padding_is_ignored(tiny_checkpoint):
    ck = load_checkpoint(tiny_checkpoint)
    enc = ck.tokenizer.encode(claims(4))
    v, f = torch.from_numpy(enc.values), torch.from_numpy(enc.fields)
    fraud, surprise, atts = ck.model(v, f)
    assert fraud.shape == (4,) and surprise.shape == v.shape
    assert len(atts) == ck.model.cfg.n_layers
    assert atts[0].shape == (4, ck.model.cfg.n_heads, v.shape[1], v.shape[1])
    # extra padding columns change nothing
    v2 = torch.cat([v, torch.zeros(4, 3, dtype=torch.long)], 1)
    f2 = torch.cat([f, torch.zeros(4, 3, dtype=torch.long)], 1)
    fraud2, _, _ = ck.model(v2, f2)
    assert torch.allclose(fraud, fraud2, atol=1e-5)


def test_passes_pad_rows_and_tokens_without_changing_outputs(tiny_checkpoint):
    scorer = Scorer.load(str(tiny_checkpoint), device="cpu", precision="fp32")
    enc = scorer.tokenizer.encode(claims(5))
    v, f = padded(enc.values, enc.fields, scorer.tokenizer.cls_token.value)
    assert v.shape[0] == 8 and v.shape[1] % 4 == 0 and v.shape[1] >= enc.values.shape[1]
    cls = scorer.tokenizer.cls_token.value
    assert (v[5:, 0] == cls).all() and (f[5:, 0] == FIELD_ID["cls"]).all()
    raw = scorer.raw(enc.values, enc.fields, attention=True)  # padded inside, cut to (5, T)
    with torch.inference_mode():
        fraud, surprise, atts = scorer.model(torch.from_numpy(enc.values),
                                             torch.from_numpy(enc.fields))
    assert raw.fraud_logit.shape == (5,) and raw.surprise.shape == enc.values.shape
    assert np.allclose(raw.fraud_logit, fraud.numpy(), atol=1e-5)
    real = np.isfinite(raw.surprise)  # tokens after [CLS]
    assert np.allclose(raw.surprise[real], surprise.numpy()[real], atol=1e-5)
    # a shorter claim's weights stop at its own width: compare over its tokens only
    n = enc.lengths
    for i in range(5):
        assert torch.allclose(raw.attentions[0][i, :, :n[i], :n[i]], atts[0][i, :, :n[i], :n[i]],
                              atol=1e-5)


def test_passes_of_like_length_give_each_claim_what_it_gets_alone(tiny_checkpoint):
    """However `raw` groups claims into passes, each gets the outputs of a pass of its own."""
    scorer = Scorer.load(str(tiny_checkpoint), device="cpu", precision="fp32", batch_size=4)
    enc = scorer.tokenizer.encode(claims(40))
    passes = plan_passes(enc.lengths, 4)
    assert sorted(np.concatenate(passes).tolist()) == list(range(40))
    assert all(len(p) <= 4 for p in passes) and len(passes) >= 10
    together = scorer.raw(enc.values, enc.fields)
    for i in (0, 17, 39):
        n = enc.lengths[i]
        alone = scorer.raw(enc.values[i:i + 1, :n], enc.fields[i:i + 1, :n])
        assert np.allclose(together.fraud_logit[i], alone.fraud_logit[0], atol=1e-5)
        assert np.allclose(together.surprise[i, :n], alone.surprise[0], atol=1e-5)
        assert np.isneginf(together.surprise[i, n:]).all()


@pytest.mark.parametrize("max_rows", [4, 128])
def test_warm_up_covers_every_token_count_a_pass_can_have(max_rows):
    """Whatever claims arrive, each pass's rows x width is one the warm-up ran, so no
    pass builds a linear layer's primitive while claims wait."""
    warmed = set(scorer_module.pass_token_counts(max_rows, 48))
    rng = np.random.default_rng(5)
    for _ in range(300):
        lengths = rng.integers(2, 49, size=int(rng.integers(1, 600)))
        for rows in plan_passes(lengths, max_rows):
            r, w = scorer_module.pass_shape(len(rows), int(lengths[rows].max()))
            assert r * w in warmed


def test_warm_up_runs_every_token_count_and_changes_no_score(tiny_checkpoint):
    cs = claims(12)
    cold = Scorer.load(str(tiny_checkpoint), device="cpu", precision="bf16", batch_size=16)
    before = [s.score for s in cold.score(cs)]
    warm = Scorer.load(str(tiny_checkpoint), device="cpu", precision="bf16", batch_size=16)
    ran = warm.warm_up()
    assert ran == len(scorer_module.pass_token_counts(16, warm.model.cfg.max_len))
    assert [s.score for s in warm.score(cs)] == before


def test_bench_parity_counts_decisions_the_path_changes(tiny_checkpoint):
    """`claimscope bench`'s parity: the same path against itself changes nothing; bf16
    against fp32 reports its share and its score differences."""
    from stream.dev.bench import parity
    from stream.settings import Settings

    wire = [(b"", json.dumps(c.model_dump(mode="json")).encode()) for c in claims(60)]
    same = parity(Settings(checkpoint=str(tiny_checkpoint), device="cpu", precision="fp32"),
                  wire)
    assert same.to_json() == {"precision": "fp32", "claims": 60, "changed": 0,
                              "share_changed": 0.0, "max_score_diff": 0.0,
                              "mean_score_diff": 0.0}
    for path in ("bf16", "int8"):
        p = parity(Settings(checkpoint=str(tiny_checkpoint), device="cpu", precision=path),
                   wire)
        assert p.precision == path and p.claims == 60
        assert p.share_changed == round(p.changed / 60, 5)
        assert 0 < p.max_score_diff < 0.1  # each moves scores, a little


def test_checkpoint_round_trip_and_version_is_the_weights_hash(tiny_checkpoint):
    ck = load_checkpoint(tiny_checkpoint)
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    assert ck.model_version == config["model_version"] and len(ck.model_version) == 16
    assert isinstance(ck.model, ClaimFormer)


def test_tampered_weights_are_refused(tiny_checkpoint, tmp_path):
    for name in ("weights.safetensors", "config.json", "tokenizer.json"):
        (tmp_path / name).write_bytes((tiny_checkpoint / name).read_bytes())
    data = bytearray((tmp_path / "weights.safetensors").read_bytes())
    data[-1] ^= 0x01
    (tmp_path / "weights.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="refusing a modified or corrupt checkpoint"):
        load_checkpoint(tmp_path)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match=r"weights\.safetensors is missing"):
        load_checkpoint(tmp_path)


def _drop(keys: list[str], part: str):
    def change(config: dict, tokens: dict) -> None:
        for k in keys:
            del config[part][k]
    return change


def _tokens(keep, doses=lambda r: r, groups=lambda g: g):
    def change(config: dict, tokens: dict) -> None:
        tokens["tokens"] = [t for t in tokens["tokens"] if keep(t)]
        tokens["doses"] = {k: doses(v) for k, v in tokens["doses"].items()}
        tokens["groups"] = [groups(g) for g in tokens["groups"]]
    return change


# Checkpoints as earlier versions wrote them (docs/model-history.md, "Checkpoint formats"):
# none loads, each refused with an error that says what it lacks.
EARLIER = {
    "no ancestors, no context table": (
        _drop(["group_levels", "value_dropout", "pair_rows", "pair_cols", "context_width"],
              "model"), r"its model has no context_width, group_levels, pair_cols, pair_rows"),
    "one ancestor a token": (
        _tokens(bool, groups=lambda g: g[0]), r"tokens without their 4 ancestors"),
    "strength dose buckets": (
        _tokens(bool, doses=lambda r: r[:2]), r"dose ranges without doses a day"),
    "no package sizes": (
        _tokens(bool, doses=lambda r: r[:3]), r"dose ranges without doses a day or package"),
    "no anomaly budgets": (
        _drop(["anomaly_fprs", "anomaly_cuts"], "calibration"),
        r"its calibration has no anomaly_cuts, anomaly_fprs"),
    "no modifier kinds": (
        _tokens(lambda t: not (t.startswith("units:") and "|" in t)),
        r"no unit tokens of a modifier kind"),
    "no payer edits": (
        _tokens(lambda t: not t.startswith("edits:")), r"no payer-edit tokens"),
    "a later version's setting": (
        lambda config, tokens: config["model"].update(new_setting=1),
        r"its model has unknown new_setting"),
}


@pytest.mark.parametrize("shape", list(EARLIER))
def test_checkpoints_of_earlier_versions_are_refused_saying_what_they_lack(
        tiny_checkpoint, tmp_path, shape):
    change, says = EARLIER[shape]
    old = tmp_path / "old"
    shutil.copytree(tiny_checkpoint, old)
    config = json.loads((old / "config.json").read_text())
    tokens = json.loads((old / "tokenizer.json").read_text())
    change(config, tokens)
    (old / "config.json").write_text(json.dumps(config))
    (old / "tokenizer.json").write_text(json.dumps(tokens))
    with pytest.raises(CheckpointError, match=says) as e:
        load_checkpoint(old)
    assert "train a new checkpoint" in str(e.value)


@pytest.mark.parametrize("name", ["checks.json", "metrics.json"])
def test_a_checkpoint_without_its_checks_or_metrics_is_refused(tiny_checkpoint, tmp_path, name):
    shutil.copytree(tiny_checkpoint, tmp_path / "ck")
    (tmp_path / "ck" / name).unlink()
    with pytest.raises(CheckpointError, match=rf"{name} is missing"):
        load_checkpoint(tmp_path / "ck")


def test_a_calibration_without_anomaly_budgets_is_refused():
    with pytest.raises(ValueError, match="no anomaly budgets"):
        Calibration().anomaly_cut(0.005)


@pytest.mark.parametrize("steps", [1, 2, 10, 11])
def test_training_runs_any_number_of_steps(steps):
    """Short runs (tests, `sweep --steps 10`) included: the LR schedule has edges there."""
    ck = train(TrainConfig(steps=steps, train_count=1000, val_count=400, eval_every=5),
               log=lambda m: None)
    assert ck.metrics["best_step"] <= steps


def test_no_claims_make_no_pass_and_no_scores(tiny_checkpoint):
    """`score` with an empty batch: the CLI's last flush after a multiple of its chunk."""
    assert plan_passes(np.zeros(0, dtype=np.int64), 128) == []
    assert Scorer.load(str(tiny_checkpoint), device="cpu").score([]) == []


def test_scorer_scores_explains_and_keeps_order(tiny_checkpoint):
    batch = claims(300)
    # a threshold a barely trained model's scores cross, so the fraud model flags some;
    # fp32: int8 quantises activations per batch (docs/operations.md), so under it a
    # claim's explanation may move with the claims explained beside it, and the reasons
    # compared below with explain="all" would differ for that, not for the explanation
    scorer = Scorer.load(str(tiny_checkpoint), device="cpu", batch_size=64, threshold=0.02,
                         precision="fp32")
    scores = scorer.score(batch)
    assert [s.claim_id for s in scores] == [c.claim_id for c in batch]
    for s in scores:
        assert 0 <= s.score <= 1
        assert s.flagged == (s.score >= s.threshold or "anomaly" in s.flagged_by)
        assert set(s.flagged_by) <= set(CHANNELS)
        assert ("fraud_model" in s.flagged_by) <= s.flagged
        x = s.explanation
        assert x.reason and len(x.surprising_tokens) == (3 if x.explained else 0)
        model_fired = bool({"fraud_model", "anomaly"} & set(s.flagged_by))
        if not s.flagged:  # says nothing is unusual and names nothing that would say otherwise
            assert x.reason == NOTHING_UNUSUAL
        if model_fired:  # explained: the channel that decided, its tokens, their fields
            assert x.explained == ("fraud_model" if "fraud_model" in s.flagged_by
                                   else "anomaly")
            if x.top_tokens:
                assert abs(sum(x.field_importance.values()) - 1) < 0.01
                falls = [t.attribution for t in x.top_tokens]
                assert falls == sorted(falls, reverse=True) and falls[-1] > 0
                assert {t.field for t in x.top_tokens} <= set(x.field_importance)
            else:  # no one token lowers the score: nothing is named, and the reason says so
                assert (x.reason, x.top_pairs, x.field_importance) == (AS_A_WHOLE, [], {})
        else:
            assert (x.explained, x.top_tokens, x.top_pairs, x.field_importance) == (
                None, [], [], {})
        assert s.model_version == scorer.model_version
    assert any(s.explanation.top_pairs for s in scores)
    # explain="all": every claim explained, the unflagged ones' reason unchanged
    every = Scorer.load(str(tiny_checkpoint), device="cpu", batch_size=64, explain="all",
                        threshold=0.02, precision="fp32")
    for s, t in zip(every.score(batch), scores, strict=True):
        assert s.score == t.score and s.explanation.explained is not None
        assert s.explanation.reason == t.explanation.reason


def test_top_tokens_are_the_ones_whose_removal_lowers_the_deciding_score():
    """Leave-one-out, checked from outside: take each of the claim's five least expected
    tokens out by hand (padding), read the deciding logit again; the Score names the one
    whose removal lowers it most, with that fall. Both channels: the combined score, and
    the anomaly logit where only the anomaly channel flags (threshold 1)."""
    def by_hand(scorer: Scorer, c: Claim, anomaly_only: bool) -> dict[str, float]:
        enc = scorer.tokenizer.encode([c])
        raw = scorer.raw(enc.values, enc.fields)

        def logit(r) -> float:
            if anomaly_only:
                return float(r.anomaly_logit[0])
            return float(scorer.cal.a * r.fraud_logit[0] + scorer.cal.b * r.anomaly_logit[0])

        base, falls = logit(raw), {}
        for t in np.argsort(-raw.surprise[0])[:5]:
            v, f = enc.values.copy(), enc.fields.copy()
            v[0, t] = f[0, t] = 0
            falls[enc.tokens[0][t].label] = base - logit(scorer.raw(v, f))
        return falls

    gen = ClaimGenerator(seed=31, fraud_rate=1.0, size=300,
                         patterns=("dose_out_of_range", "price_inflation", "unbundling"))
    batch = [Claim.model_validate(i.claim) for i in gen.generate(60)]
    for scorer, channel in ((Scorer.load("default", device="cpu", precision="fp32"),
                             "fraud_model"),
                            (Scorer.load("default", device="cpu", precision="fp32",
                                         threshold=1.0, anomaly_fpr=0.1), "anomaly")):
        checked = 0
        for c, s in zip(batch, scorer.score(batch), strict=True):
            if s.explanation.explained != channel or not s.explanation.top_tokens:
                continue
            checked += 1
            falls = by_hand(scorer, c, channel == "anomaly")
            top = s.explanation.top_tokens[0]
            assert top.attribution == pytest.approx(max(falls.values()), abs=1e-3)
            assert falls[top.token] == pytest.approx(top.attribution, abs=1e-3)
        assert checked >= 10, channel  # the shipped model flags most of these either way

def test_the_anomaly_channel_flags_on_its_own_within_its_budget(tiny_checkpoint):
    batch = claims(400, seed=21, fraud_rate=0.0)
    ck = load_checkpoint(tiny_checkpoint)
    assert len(ck.calibration.anomaly_cuts) == len(ANOMALY_FPRS)
    assert list(ck.calibration.anomaly_cuts) == sorted(ck.calibration.anomaly_cuts, reverse=True)
    by_budget = {}
    for fpr in (0.001, 0.1):
        scorer = Scorer(load_checkpoint(tiny_checkpoint), device="cpu", threshold=1.0,
                        anomaly_fpr=fpr)  # the fraud model flags nothing at threshold 1
        scores = scorer.score(batch)
        by_budget[fpr] = {s.claim_id for s in scores if s.flagged}
        assert all(s.flagged_by == ["anomaly"] for s in scores if s.flagged)
        assert all(s.explanation.reason != NOTHING_UNUSUAL for s in scores if s.flagged)
    assert by_budget[0.001] <= by_budget[0.1]
    assert 0 < len(by_budget[0.1]) < 0.3 * len(batch)  # clean claims: about the budget
    with pytest.raises(ValueError, match="outside what the checkpoint calibrated"):
        Scorer(load_checkpoint(tiny_checkpoint), device="cpu", anomaly_fpr=0.5)


def test_a_code_training_never_showed_is_no_evidence_for_the_anomaly_channel():
    """Clean claims carrying a code the shipped checkpoint's training held out: the surprise
    head often finds that never-trained code the claim's most surprising token, past the
    anomaly channel's cut. The anomaly logit reads only the tokens whose code training
    showed, so the channel flags such a claim only for one of those, and the stacked score
    reads the same logit."""
    scorer = Scorer.load("default", device="cpu", precision="fp32")
    held = heldout_set(scorer.ck.training)
    batch = [Claim.model_validate(i.claim)
             for i in ClaimGenerator(seed=11, fraud_rate=0.0, size=6000).generate(6000)
             if any(held.intersection(codes(i.claim)) for codes in CODES_OF.values())]
    enc = scorer.tokenizer.encode(batch)
    raw = scorer.raw(enc.values, enc.fields)
    cut = scorer.anomaly_cut
    seen_peak = np.where(raw.novel, -np.inf, raw.surprise).max(axis=1)
    on_novel = (np.where(raw.novel, raw.surprise, -np.inf).max(axis=1) >= cut) & (
        seen_peak < cut)
    assert raw.novel.any(axis=1).mean() > 0.5 and on_novel.sum() >= 5
    held_ids = [scorer.tokenizer.ids[f][c] for f, codes in scorer.ck.training["heldout"].items()
                for c in codes]
    assert scorer.novel[held_ids].all()  # every code training held out is novel
    np.testing.assert_array_equal(raw.anomaly_logit, seen_peak)
    odd = np.array(["anomaly" in s.flagged_by for s in scorer.score(batch)])
    np.testing.assert_array_equal(odd, seen_peak >= cut)
    c = scorer.cal
    np.testing.assert_allclose(scorer.combined_logit(raw), c.a * raw.fraud_logit
                               + c.b * seen_peak + c.c)


def test_recalibrating_rebuilds_the_claims_a_run_calibrated_on(tiny_checkpoint):
    """`recalibrate` fits the score rule again on claims rebuilt from the checkpoint's
    training record: on a checkpoint calibrated by this code, the very same rule. One
    trained on an insurer's claims is refused: those are not ours to rebuild."""
    ck = load_checkpoint(tiny_checkpoint)
    again, metrics = recalibrate(ck)
    assert again == ck.calibration and metrics == ck.metrics["calibration"]
    ck.training = {**ck.training, "source": "history"}
    with pytest.raises(ValueError, match="not trained on generated claims"):
        recalibrate(ck)


def test_checks_that_fire_are_named_in_flagged_by(tiny_checkpoint):
    c = next(x for x in claims(20) if x.procedures)
    twin = c.model_copy(update={"claim_id": c.claim_id + "-dup"})
    scorer = Scorer.load(str(tiny_checkpoint), device="cpu", check_state=MemoryState())
    first, second = scorer.score([c, twin])
    assert "duplicate_billing" not in first.flagged_by
    assert "duplicate_billing" in second.flagged_by and second.flagged


def test_scores_do_not_depend_on_batch_composition(tiny_checkpoint):
    """A claim scores the same alone as in a batch (that pads it more): exactly enough in
    fp32; in bf16 to the rounding of the fused attention's blocked sums (an 8-bit
    mantissa: 1e-4 held for one tiny checkpoint and missed by 1.1e-4 on a score of 0.043
    for another, a 0.3% difference); in int8 to about a hundredth: dynamic quantisation
    scales a pass's activations by the largest in the whole pass, so the other claims move
    a claim's rounding (docs/operations.md, "On an EPYC with AVX512-BF16 but no AMX")."""
    batch = claims(50)
    for precision, tolerance in (("fp32", 1e-6), ("bf16", 1e-3), ("int8", 0.01)):
        scorer = Scorer.load(str(tiny_checkpoint), device="cpu", precision=precision)
        alone = [scorer.score([c])[0].score for c in batch[:5]]
        together = [s.score for s in scorer.score(batch)[:5]]
        assert np.allclose(alone, together, atol=tolerance), (precision, alone, together)


@pytest.mark.parametrize(("flags", "device", "expected"), [
    ({"avx2", "avx512_bf16", "amx_bf16", "amx_tile"}, "cpu", "bf16"),  # a Xeon with AMX
    ({"avx2", "avx512_bf16", "avx512_vnni"}, "cpu", "int8"),  # an EPYC: int8 measured faster
    ({"avx2", "fma"}, "cpu", "int8"),
    ({"avx2"}, "cuda", "bf16"),
])
def test_auto_precision_follows_the_measured_fastest_path(monkeypatch, flags, device, expected):
    monkeypatch.setattr(scorer_module, "cpu_flags", lambda: frozenset(flags))
    assert resolve_precision("auto", torch.device(device)) == expected
    assert resolve_precision("fp32", torch.device(device)) == "fp32"  # asked for: kept


def test_precision_that_cannot_run_is_refused_with_its_reason():
    with pytest.raises(ValueError, match="one of auto, fp32, bf16, int8, not 'fp16'"):
        resolve_precision("fp16", torch.device("cpu"))
    with pytest.raises(ValueError, match="int8 runs on a CPU only"):
        resolve_precision("int8", torch.device("cuda"))


def test_cpu_flags_are_read_from_proc_cpuinfo():
    """The real file of this machine: the flags of its "flags" lines, and nothing else of
    the file (not the vendor, not the model name's words)."""
    if platform.machine() != "x86_64" or not Path("/proc/cpuinfo").exists():
        pytest.skip("not Linux on x86-64: there is no flags line to read")
    text = Path("/proc/cpuinfo").read_text()
    first = re.search(r"^flags\s*:(.*)$", text, re.MULTILINE)
    assert first is not None
    assert scorer_module.cpu_flags() == frozenset(first.group(1).split())
    assert not {"processor", "GenuineIntel", "AuthenticAMD"} & scorer_module.cpu_flags()


def test_duplicate_check_fires_once_and_redelivery_is_not_a_duplicate():
    c = claims(1)[0]
    twin = c.model_copy(update={"claim_id": c.claim_id + "-dup"})
    checks = CrossClaimChecks(MemoryState())
    assert checks.run([c]) == [[]]
    assert checks.run([c]) == [[]]  # the same claim redelivered
    hits = checks.run([twin])[0]
    assert [h.name for h in hits] == ["duplicate_billing"]
    assert c.claim_id in hits[0].reason


def test_velocity_check_counts_distinct_claims_in_the_window():
    c = claims(1)[0]
    checks = CrossClaimChecks(MemoryState(), CheckLimits(window_days=7, velocity_limit=3))
    batch = [c.model_copy(update={"claim_id": f"V{i}", "provider_id": f"P{i}"})
             for i in range(5)]
    hits = checks.run(batch)
    assert [bool(h) for h in hits] == [False, False, False, True, True]
    assert checks.run(batch[:1]) != [[]]  # a redelivery sees the same 5 claims, not 6
    assert "5 claims within 7 days" in checks.run(batch[:1])[0][0].reason


def visits_of(c: Claim, specialty: str, n: int, every_days: int) -> list[Claim]:
    """`n` claims of c's member with `specialty` at place 11, `every_days` apart, each from
    its own provider (so none is a duplicate of another)."""
    return [c.model_copy(update={
        "claim_id": f"{specialty}-{i}", "provider_id": f"P-{specialty}-{i}",
        "provider_specialty": specialty, "place_of_service": "11",
        "service_date": c.service_date + dt.timedelta(days=every_days * i)}) for i in range(n)]


def test_series_care_counts_one_visit_per_learned_number_of_its_claims():
    c = claims(1)[0]
    week = visits_of(c, "nephrology", 3, 2) + visits_of(c, "family_medicine", 1, 0)
    learned = CrossClaimChecks(MemoryState(), CheckLimits(per_kind={"nephrology@11": 3}))
    flat = CrossClaimChecks(MemoryState())
    assert [h for h in learned.run(week) if h] == []  # dialysis x3 + a visit: two visits
    assert [bool(h) for h in flat.run(week)] == [False, False, False, True]
    burst = visits_of(c, "family_medicine", 4, 1)  # four everyday visits stay four
    later = [x.model_copy(update={"claim_id": "b" + x.claim_id, "member_id": "M-other"})
             for x in burst]
    hits = learned.run(later)
    assert [bool(h) for h in hits] == [False, False, False, True]
    assert "4 claims within 7 days" in hits[3][0].reason


def test_a_repeat_modifier_excuses_a_same_day_repeat_only_on_a_repeatable_code():
    c = next(x for x in claims(50) if x.procedures)
    code = c.procedures[0].code
    line = c.procedures[0].model_copy(update={"modifiers": ["76"]})
    again = [c.model_copy(update={"claim_id": f"R{i}", "procedures": [line]}) for i in range(2)]
    repeatable = CrossClaimChecks(MemoryState(), CheckLimits(repeat_codes=frozenset({code})))
    assert [[h.name for h in hits] for hits in repeatable.run([c, *again])] == [
        [], [], ["duplicate_billing"]]  # a second session passes; a third 76 does not
    never = CrossClaimChecks(MemoryState())
    assert [[h.name for h in hits] for hits in never.run([c, again[0]])] == [
        [], ["duplicate_billing"]]


def test_limits_learned_from_history_spare_frequent_care_and_still_catch_bursts():
    def stream(seed):
        gen = ClaimGenerator(seed=seed, fraud_rate=0.05, size=20_000)
        items = list(gen.generate(20_000))
        return ([Claim.model_validate(x.claim) for x in items],
                np.array([x.fraud_pattern for x in items]),
                np.array([x.claim["member_id"] in gen.plans for x in items]))

    history, patterns, _ = stream(3)
    limits = fit_limits(history, patterns == CLEAN)
    assert {"nephrology@11", "physical_therapy@11"} <= set(limits.per_kind)  # dialysis, PT
    assert "family_medicine@11" not in limits.per_kind
    assert "97110" in limits.repeat_codes  # the odd second therapy session of a day
    test, patterns, series = stream(4)

    def fired(lim):
        checks, out = CrossClaimChecks(MemoryState(), lim), []
        for s in range(0, len(test), 1000):
            out += [bool(h) for h in checks.run(test[s:s + 1000])]
        return np.array(out)

    learned, flat = fired(limits), fired(CheckLimits())
    frequent = (patterns == CLEAN) & series
    assert frequent.sum() > 500
    assert learned[frequent].mean() < flat[frequent].mean() / 4
    assert learned[patterns == CLEAN].mean() < 0.01
    assert learned[patterns == "high_velocity_member"].mean() > 0.9
    assert learned[patterns == "duplicate_billing"].mean() > 0.95


def test_checkpoint_keeps_the_learned_limits(tiny_checkpoint):
    ck = load_checkpoint(tiny_checkpoint)
    assert (tiny_checkpoint / "checks.json").is_file()
    assert ck.check_limits == CheckLimits.load(tiny_checkpoint / "checks.json")
    assert ck.check_limits.velocity_limit >= 1
    card = (tiny_checkpoint / "model_card.md").read_text()
    assert card.startswith(f"# ClaimFormer {ck.model_version}") and "synthetic generator" in card
    held = ck.training["heldout"]
    assert f"{len(held['drug'])} drug codes" in card and held["diagnosis"]  # what it never saw


def test_snapshots_are_log_spaced():
    assert snapshot_steps(2500) == [0, 10, 31, 100, 316, 1000, 2500]


def test_report_writes_json_and_heat_maps(tiny_checkpoint, tmp_path):
    from model.quality.report import write_report

    files = write_report(str(tiny_checkpoint), tmp_path)
    report = json.loads((tmp_path / "report.json").read_text())
    steps = [s["step"] for s in report["snapshots"]]
    assert steps == snapshot_steps(6)
    heads = report["snapshots"][0]["heads"]
    assert len(heads) == 2 * 4  # layers x heads of the default model
    pngs = [f for f in files if f.suffix == ".png"]
    assert (tmp_path / "metric_curve.png") in pngs
    assert len(pngs) == 1 + len(steps) * len(heads)
    assert all(f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for f in pngs)


def test_head_matrices_are_distributions(tiny_checkpoint):
    ck = load_checkpoint(tiny_checkpoint)
    snap = ck.metrics["snapshots"][-1]
    for h in snap["heads"]:
        m = np.array(h["matrix"])
        present = m.sum(axis=1) > 0
        assert np.allclose(m[present].sum(axis=1), 1, atol=1e-3)
        assert 0 <= h["specialisation"] <= np.log(2) + 1e-6


def test_shipped_checkpoint_is_small_verified_and_separates_fraud():
    from model.checkpoint import default_checkpoint_path

    folder = default_checkpoint_path()
    # 2.2 M parameters in float32, the 0.8 MB context table (`Support`), the token list
    assert sum(f.stat().st_size for f in folder.iterdir()) < 11 * 2**20
    scorer = Scorer.load("default", device="cpu")
    gen = ClaimGenerator(seed=77, fraud_rate=0.3, size=1500)
    items = list(gen.generate(1500))
    scores = scorer.score([Claim.model_validate(x.claim) for x in items])
    fraud = np.array([x.fraud_pattern != "none" for x in items])
    flagged = np.array([s.flagged for s in scores])
    # on the world of real tables the shipped checkpoint catches less than the old ones did
    # on the old world (docs/model.md: 0.69 of fraud on the yardstick) and flags fewer
    # clean claims
    assert flagged[fraud].mean() > 0.4
    assert flagged[~fraud].mean() < 0.03


def test_built_scores_dump_exactly_like_validated_ones(tiny_checkpoint):
    from model.score import Score

    built = Scorer.load(str(tiny_checkpoint), device="cpu").score(claims(20))
    for s in built:
        validated = Score.model_validate_json(s.model_dump_json())
        assert validated.model_dump() == s.model_dump()
        assert validated.model_dump_json() == s.model_dump_json()
        assert validated == s


def test_reasons_name_the_medical_cause_of_the_token_that_decided(tok):
    from model import explain

    v = default_vocabulary()
    gen = ClaimGenerator(seed=12, fraud_rate=1.0, size=400,
                         patterns=("diagnosis_treatment_mismatch", "dose_out_of_range"))
    seen = set()
    for item in gen.generate(200):
        c = Claim.model_validate(item.claim)
        toks, _ = tok.tokens_of(c)
        dx = [t.parts[0] for t in toks if t.field == "diagnosis"]
        for i, t in enumerate(toks):
            line = explain.reason(toks, i, 0, v)
            if t.field == "drug" and t.parts[0] not in v.justified_drugs(dx):
                assert line.endswith("no diagnosis on the claim is treated with it"), line
                seen.add("drug")
            if t.field == "dose" and t.parts[1] > (
                    v.drugs[t.parts[0]].daily_max_mg):
                assert "mg a day, above its" in line, line
                seen.add("dose")
    assert seen == {"drug", "dose"}


def test_a_package_fill_reads_its_dose_with_a_package_to_spare_and_its_fee_in_the_price(tok):
    """Eye drops come by the bottle: one 200-drop bottle for a week of six drops a day
    read as 'over 3x the normal range' and flagged every child's conjunctivitis; ten
    bottles are still an overdose, also against an insurer's own history of one-bottle
    fills (`with_references` keeps a package drug's range: its quantities count bottles).
    A single tablet's charge is mostly its dispensing fee: $8-9 for one fluconazole tablet
    read as twice the top unit price."""
    base = claims(1)[0].model_dump(mode="json")

    def fill(name: str, strength: float, quantity: float, days: int, charge: float) -> Claim:
        c = {**base, "medications": [{"name": name, "strength_mg": strength,
                                      "quantity": quantity, "days_supply": days,
                                      "charge": charge}]}
        c["total_charge"] = round(sum(float(p["charge"]) for p in c["procedures"]) + charge, 2)
        return Claim.model_validate(c)

    def read(*args, reader: ClaimTokenizer = tok) -> dict[str, tuple]:
        toks, _ = reader.tokens_of(fill(*args))
        return {t.field: t.parts for t in toks}

    drops = "polymyxin b-trimethoprim"
    assert read(drops, 0.05, 200, 7, 12.0)["dose"][2] in ("low", "mid", "high")
    assert read(drops, 0.05, 2000, 7, 120.0)["dose"][2] == "above_10x"
    assert read("metformin", 500, 600, 30, 12.0)["dose"][2] == "above_3x"  # by the unit
    name, charge, quantity, ratio = read("fluconazole", 150, 1, 1, 8.0)["drug_price"]
    assert (name, charge, quantity) == ("fluconazole", 8.0, 1) and ratio < 1
    assert read("fluconazole", 150, 1, 1, 80.0)["drug_price"][3] > 3
    history = tok.with_references([fill(drops, 0.05, 200, 7, 12.0)] * 30)
    assert history.doses[drops] == tok.doses[drops]
    assert read(drops, 0.05, 2000, 7, 120.0, reader=history)["dose"][2] == "above_10x"


def test_an_as_needed_fill_reads_as_its_range_at_the_least_and_its_overdose_still_shows(tok):
    """Nine sumatriptan tablets for 30 days are the usual triptan fill: read as 15 mg a day,
    'below the normal range', they made the anomaly channel flag every migraine follow-up
    of the everyday-care suite. A drug taken as needed reads as at least its range's
    bottom (its label keeps the fill's own mg a day); a daily drug below its range, and an
    as-needed overdose, read as before."""
    base = claims(1)[0].model_dump(mode="json")
    v = default_vocabulary()
    assert v.drugs["sumatriptan"].as_needed and not v.drugs["topiramate"].as_needed

    def dose(name: str, strength: float, quantity: float, days: int) -> str:
        c = {**base, "medications": [{"name": name, "strength_mg": strength,
                                      "quantity": quantity, "days_supply": days,
                                      "charge": 20.0}]}
        c["total_charge"] = round(sum(float(p["charge"]) for p in c["procedures"]) + 20.0, 2)
        toks, _ = tok.tokens_of(Claim.model_validate(c))
        return next(t.parts[2] for t in toks if t.field == "dose")

    assert dose("sumatriptan", 50, 9, 30) == "low"
    assert dose("sumatriptan", 100, 90, 30) == "above_3x"  # 300 mg a day: over the top
    assert dose("topiramate", 25, 9, 30) == "below_3x"  # a daily drug: as it was
    # a rescue inhaler is both: one 200-puff albuterol inhaler for three months
    assert v.drugs["albuterol"].as_needed and v.drugs["albuterol"].package
    assert dose("albuterol", 0.09, 200, 90) in ("low", "mid")
    c = {**base, "medications": [{"name": "sumatriptan", "strength_mg": 50, "quantity": 9,
                                  "days_supply": 30, "charge": 20.0}]}
    c["total_charge"] = round(sum(float(p["charge"]) for p in c["procedures"]) + 20.0, 2)
    toks, _ = tok.tokens_of(Claim.model_validate(c))
    assert next(t.parts[1] for t in toks if t.field == "dose") == 15.0  # the fill's own dose


def test_a_dose_reason_states_small_doses_as_they_are():
    """'polymyxin b-trimethoprim: 1 mg a day, above its 0 mg a day maximum' was printed for
    eye drops whose maximum is 0.3 mg a day: whole milligrams rounded it away."""
    from model import explain
    from model.tokenizer import Token

    v = default_vocabulary()
    digoxin = v.drugs["digoxin"]
    top = digoxin.daily_max_mg
    dose = Token("dose", 1, ("digoxin", 4 * top, "high"))
    line = explain.reason([Token("cls", 1, ()), dose], 1, None, v)
    assert line == f"digoxin: {4 * top:.3g} mg a day, above its {top:.3g} mg a day maximum"
    assert " 0 mg" not in line
    assert [explain.mg(x) for x in (0.28, 1.0, 12.5, 6000.0)] == ["0.28", "1", "12.5", "6,000"]


def test_a_reason_never_calls_a_pair_unusual_that_our_tables_list_together():
    """"emergency medicine rarely bills 99284" was a reason the shipped model gave: false by
    our own specialty table. Where the tables list the pair, the line says the token does
    not fit the rest of the claim, and why the pair itself is fine; where they do not (or
    for a visit, which no one diagnosis calls for), the model's reading stands."""
    from model import explain
    from model.tokenizer import Token

    v = default_vocabulary()
    er = v.specialties["emergency_medicine"]
    billed = sorted(er.procedures)[0]
    never = next(c for c in sorted(v.procedures) if c not in er.procedures)
    area = next(a for a in v.areas.values() if a.procedures and a.drugs and a.specialties)
    dx = next(d.code for d in v.diagnoses.values() if d.area == area.id)
    called, drug = sorted(area.procedures)[0], sorted(area.drugs)[0]
    writer = sorted(area.specialties & set(v.specialties))[0]
    stranger = next(s for s in sorted(v.specialties)
                    if s != "pharmacy" and not v.prescribes(s, drug))
    # a procedure another diagnosis on the claim calls for, and the partner does not
    dx2, uncalled = next((d.code, c) for d in v.diagnoses.values()
                         for c in sorted(v.areas[d.area].procedures)
                         if c not in v.justified_procedures([dx]))
    visit = "99215"
    assert visit in v.general_procedures

    def line(t: Token, partner: Token) -> str:
        claim = [Token("cls", 1, ()), t, partner, Token("diagnosis", 1, (dx2,)),
                 Token("diagnosis", 1, (dx,))]
        return explain.reason(claim, 1, 2, v)

    def spec(s: str) -> Token:
        return Token("specialty", 1, (s,))

    pill = Token("drug", 1, (drug, v.drugs[drug].strength_max_mg))
    diagnosis = Token("diagnosis", 1, (dx,))
    for who, partner, name in ((spec("emergency_medicine"), Token("procedure", 1, (billed,)),
                                billed), (spec(writer), pill, drug), (spec("pharmacy"), pill,
                                                                       drug)):
        said = line(who, partner)
        assert "rarely bills" not in said and f"({name} is listed for " in said, said
    assert "rarely bills" in line(spec("emergency_medicine"), Token("procedure", 1, (never,)))
    assert "rarely bills" in line(spec(stranger), pill)
    assert f"(listed for {dx}'s area, {area.name})" in line(Token("procedure", 1, (called,)),
                                                             diagnosis)
    treated = line(pill, diagnosis)
    assert f"(listed for {dx}'s area" in treated and "unusual" not in treated, treated
    for unlisted in (uncalled, visit, None):  # None: a service the claim did not name
        said = line(Token("procedure", 1, (unlisted,)), diagnosis)
        assert "is unusual with" in said, said
    # the member: "age 69 does not fit 84484 Troponin" was false by the code's own ages
    men = next(d for d in v.diagnoses.values() if d.who.sex == "M" and d.who.min_age > 0)
    older = Token("diagnosis", 1, (men.code,))
    said = line(Token("age", 1, (men.who.min_age,)), older)
    assert said.startswith("member age") and f"({men.code} is for ages" in said, said
    fits = "does not fit the rest of the claim"
    assert fits not in line(Token("age", 1, (men.who.min_age - 1,)), older)
    assert f"({men.code} is for men)" in line(Token("sex", 1, ("M",)), older)
    assert fits not in line(Token("sex", 1, ("F",)), older)  # the model's reading stands
    for unstated in (Token("sex", 1, ("U",)), Token("age", 1, (None,))):  # contradict nothing
        said = line(unstated, older)
        assert said == f"member {unstated.label} does not fit the rest of the claim", said
    # an unlisted diagnosis reads as its category's stand-in: its ages, sex and area are
    # not said to be the stand-in's
    sibling = next(c for c in ("C50.021", "C50.029", "C50.022") if c not in v.diagnoses
                   and v.resolve_diagnosis(c) is not None)
    assert fits not in line(Token("sex", 1, ("F",)), Token("diagnosis", 1, (sibling,)))
    # a procedure any diagnosis allows is said to be; a visit is left to the model
    lab = next(c for c in sorted(v.general_procedures) if not v.procedures[c].em_level)
    assert "(allowed with any diagnosis)" in line(Token("procedure", 1, (lab,)), diagnosis)


def test_support_buckets_match_a_lookup_and_never_train_the_padding_row(tiny_checkpoint):
    """The multi-hot bucket embedding is the lookup-and-sum it replaced, and a reading
    that does not apply sends no gradient to row 0 (as padding_idx does for a lookup)."""
    sup = load_checkpoint(tiny_checkpoint).model.support
    r = torch.randn(8, 11, 3) * 6
    a = torch.rand(8, 11, 3) > 0.4
    b = r.round().clamp(-sup.CLIP, sup.CLIP).long() + sup.CLIP + 1 + (
        2 * sup.CLIP + 1) * torch.arange(3)
    assert torch.allclose(sup.embed(r, a), sup.bucket(torch.where(a, b, 0)).sum(dim=2))
    sup.bucket.weight.grad = None
    sup.embed(r, a).sum().backward()
    assert sup.bucket.weight.grad[0].abs().max() == 0
    assert sup.bucket.weight.grad[1:].abs().max() > 0


def test_the_cached_code_table_follows_the_weights(tiny_checkpoint):
    """Out of training a token's own and ancestor vectors come from a cached table: it
    is rebuilt when the weights change (a load, forget_unseen) and equals the per-token
    sums training reads."""
    model = load_checkpoint(tiny_checkpoint).model.eval()
    values = torch.arange(1, 40).reshape(3, 13)

    def summed() -> torch.Tensor:
        return model.value(values) + model.group(model.group_of[values]).sum(dim=2)

    with torch.no_grad():
        assert torch.allclose(model.codes(values), summed())
        model.forget_unseen(torch.arange(1, 20))  # in place: the table must follow
        assert torch.allclose(model.codes(values), summed())
        state = {k: v.clone() for k, v in model.state_dict().items()}
        state["value.weight"] += 1.0
        model.load_state_dict(state)
        assert torch.allclose(model.codes(values), summed())


def test_the_everyday_suite_scores_each_stream_on_its_own(tiny_checkpoint):
    from model.quality.everyday import MUTATIONS, everyday

    scorer = Scorer.load(str(tiny_checkpoint), device="cpu", check_state=MemoryState())
    kept = scorer.checks
    r = everyday(scorer, per_kind=2, seed=3, log=lambda m: None)
    assert scorer.checks is kept  # its own cross-claim state, put back
    assert r.kinds >= 40 and r.claims == 2 * r.kinds
    assert 0 <= r.clean_flag_rate <= 1 and set(r.mutations) == set(MUTATIONS)
    for m in r.mutations.values():
        assert 0 <= m.auroc <= 1 and 0 <= m.named_top1 <= 1
    assert r.mutations["dose_x10"].claims < r.mutations["price_x10"].claims
    assert "duplicate_billing" not in r.clean_flagged_by  # no stream saw a copy twice


def test_unknown_header_fields_read_as_their_unknown_tokens_and_the_score_names_them():
    """A claim whose member or provider the producer does not know (null age and specialty,
    sex U) is scored, reads each as its field's unknown token, trips no MCE age edit, and
    its Score lists what was unknown. The shipped checkpoint, as the stream runs it."""
    scorer = Scorer.load("default", device="cpu")
    # an MCE age edit (Z38.00, a newborn born in hospital) on a 70-year-old: read with the
    # age unknown the edit cannot apply
    wire = next(iter(ClaimGenerator(seed=3, fraud_rate=0.0).generate(1))).claim
    known = Claim.model_validate(wire | {"member_age": 70, "diagnoses": ["Z38.00"]})
    blank = known.model_copy(update={"member_age": None, "member_sex": "U",
                                     "provider_specialty": None})
    assert Claim.model_validate_json(claim_json(blank)) == blank  # the nulls round-trip
    tok = scorer.tokenizer
    seq, _ = tok.tokens_of(blank)
    assert [t.value for t in seq[1:4:2]] == [tok.oov["age"], tok.oov["specialty"]]
    assert [t.label for t in seq[1:4:2]] == ["age unknown", "specialty unknown"]
    full, read = scorer.score([known, blank])
    assert "mce_age" in full.flagged_by and "mce_age" not in read.flagged_by
    assert (full.unknown, read.unknown) == ([], ["member_age", "member_sex",
                                                 "provider_specialty"])
    with pytest.raises(ValueError, match="member_age"):  # the key itself stays required
        Claim.model_validate({k: v for k, v in wire.items() if k != "member_age"})
