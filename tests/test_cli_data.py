"""`claimscope schema | validate | generate`: exit codes and one clear line per problem."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from stream.cli import app

runner = CliRunner()


def run(*args: str, stdin: str | None = None):
    return runner.invoke(app, list(args), input=stdin)


def test_generate_then_validate_round_trip():
    gen = run("generate", "--count", "300", "--seed", "7")
    assert gen.exit_code == 0
    assert len(gen.stdout.splitlines()) == 300
    val = run("validate", "-", stdin=gen.stdout)
    assert val.exit_code == 0, val.stdout
    assert "300 claims: 300 valid, 0 invalid" in val.stdout


def test_generate_with_labels_wraps_each_claim():
    out = run("generate", "--count", "50", "--seed", "1", "--fraud-rate", "0.5", "--labels",
              "--patterns", "upcoding,unbundling")
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    assert all(set(x) == {"claim", "fraud_pattern"} for x in lines)
    assert {x["fraud_pattern"] for x in lines} <= {"none", "upcoding", "unbundling"}


def test_validate_reports_each_bad_line_and_exits_1(tmp_path):
    good = run("generate", "--count", "2", "--seed", "7").stdout.splitlines()
    bad_age = json.loads(good[0]) | {"member_age": -3}
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(['{"claim_id": "C1", "this is": not json', good[1], "[1, 2, 3]",
                               json.dumps(bad_age)]) + "\n")
    out = run("validate", str(path))
    assert out.exit_code == 1
    lines = out.stdout.splitlines()
    assert lines[0].startswith("line 1: claim: Invalid JSON")
    assert lines[1].startswith("line 3: ")
    assert lines[2].startswith(f"line 4 (claim_id {bad_age['claim_id']}): member_age:")
    assert lines[-1] == "4 claims: 1 valid, 3 invalid"
    assert "Traceback" not in out.output


def test_missing_file_is_one_line_not_a_traceback():
    out = run("validate", "/nonexistent/claims.jsonl")
    assert out.exit_code == 2
    assert "cannot read /nonexistent/claims.jsonl" in out.output
    assert "Traceback" not in out.output


def test_unknown_pattern_is_one_line():
    out = run("generate", "--patterns", "teleportation")
    assert out.exit_code == 2
    assert "unknown fraud pattern(s): teleportation" in out.output


def test_schema_is_json_schema():
    schema = json.loads(run("schema").stdout)
    assert schema["$schema"].endswith("2020-12/schema")
    assert "claim_id" in schema["properties"]
