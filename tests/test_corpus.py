"""The public sample corpus (tests/data/corpus: the FHIR specification's examples, CARIN Blue
Button, Da Vinci, Synthea, six open-source X12 libraries' test files; ORIGINS.md in each):
files nobody here wrote, read as a payer's integration engineer would meet them.

Each record converts or fails with its own one-line reason, never an exception; prior
authorisations are left out as notes; what converts is scored. The floors are this
checkout's measurement (docs/formats.md, "A corpus of real samples"): a change that loses a
record that used to convert fails here.
"""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from model.claims import Claim
from model.formats import convert
from model.formats.report import corpus_report, detect
from model.scorer import Scorer
from stream.cli import app

CORPUS = Path(__file__).parent / "data" / "corpus"
# converted records per source, as measured (2026-12-04); prior authorisations aside
FLOORS = {"carin-bb": 20, "davinci": 0, "fhir-spec": 1, "synthea": 11, "x12": 2}


def test_every_source_has_its_origins_recorded():
    for source in FLOORS:
        origins = (CORPUS / source / "ORIGINS.md").read_text()
        for f in (CORPUS / source).iterdir():
            if f.name != "ORIGINS.md":
                assert f"`{f.name}`" in origins, f


def test_every_record_converts_or_fails_with_its_reason():
    report = corpus_report(CORPUS)
    assert set(report.sources) == set(FLOORS)
    for name, figures in report.sources.items():
        assert figures.converted >= FLOORS[name], (name, figures)
        assert figures.records == figures.converted + figures.skipped + figures.failed
        assert sum(figures.reasons.values()) == figures.failed
        # each reason names the input's defect: none is a mapping the reader did not foresee
        # ("cannot map") or a parser that gave up ("unparseable"), both caught exceptions
        assert all(reason.strip() and not any(x in reason for x in (
            "Traceback", "cannot map:", "unparseable:")) for reason in figures.reasons), \
            figures.reasons
    assert report.sources["davinci"].skipped == 10  # prior authorisations: notes, not claims
    assert report.sources["carin-bb"].other_files >= 50  # their Patients, Practitioners …


def test_what_converts_is_scored():
    claims = []
    for path in sorted(CORPUS.rglob("*")):
        if path.suffix == ".md" or not path.is_file() or detect(path.read_bytes()) is None:
            continue
        claims += [c for c in convert(detect(path.read_bytes()), path.read_bytes())
                   if isinstance(c, Claim)]
    assert len(claims) >= sum(FLOORS.values())  # CARIN's without their references too
    scores = Scorer.load("default", device="cpu").score(claims)
    assert [s.claim_id for s in scores] == [c.claim_id for c in claims]
    assert all(0.0 <= s.score <= 1.0 and s.explanation.reason for s in scores)


def test_convert_report_prints_each_source():
    out = CliRunner().invoke(app, ["convert", "--report", "--json", str(CORPUS)])
    assert out.exit_code == 0, out.output
    rep = json.loads(out.stdout)
    assert set(rep) == {*FLOORS, "all"}
    assert rep["all"]["converted"] == sum(rep[s]["converted"] for s in FLOORS)
