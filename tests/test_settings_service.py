"""Settings: sources and their precedence, validation in one line, secrets never shown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stream.settings import Settings, SettingsError, load_settings


def test_env_beats_config_file_and_options_beat_env(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "cs.toml"
    cfg.write_text('partitions = 8\nkey_prefix = "file:"\nmax_batch = 100\n')
    monkeypatch.setenv("CLAIMSCOPE_KEY_PREFIX", "env:")
    monkeypatch.setenv("CLAIMSCOPE_MAX_BATCH", "200")
    s = load_settings(cfg, max_batch=300)
    assert (s.partitions, s.key_prefix, s.max_batch) == (8, "env:", 300)
    monkeypatch.setenv("CLAIMSCOPE_CONFIG", str(cfg))
    assert load_settings().partitions == 8
    js = tmp_path / "cs.json"
    js.write_text(json.dumps({"topic_claims": "in", "threshold": 0.7}))
    s = load_settings(js)
    assert (s.topic_claims, s.threshold) == ("in", 0.7)


@pytest.mark.parametrize(("env", "words"), [
    ({"CLAIMSCOPE_BROKER": "http://127.0.0.1:9092"}, "CLAIMSCOPE_BROKER: expected kafka://"),
    ({"CLAIMSCOPE_BROKER": "kafka://nohost"}, "host:port"),
    ({"CLAIMSCOPE_REDIS_URL": "mysql://:pw@db/0"}, "CLAIMSCOPE_REDIS_URL: expected redis://"),
    ({"CLAIMSCOPE_PARTITIONS": "0"}, "CLAIMSCOPE_PARTITIONS"),
    ({"CLAIMSCOPE_SECURITY_PROTOCOL": "SASL_SSL"}, "needs sasl_username"),
])
def test_bad_values_are_one_readable_line(monkeypatch: pytest.MonkeyPatch, env: dict,
                                          words: str) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SettingsError) as e:
        load_settings()
    assert words in str(e.value) and "\n" not in str(e.value)
    assert "pw" not in str(e.value)


def test_config_file_problems(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("partitions = \n")
    with pytest.raises(SettingsError, match="does not parse"):
        load_settings(bad)
    typo = tmp_path / "typo.toml"
    typo.write_text("partitons = 3\n")
    with pytest.raises(SettingsError, match="PARTITONS: unknown setting"):
        load_settings(typo)
    with pytest.raises(SettingsError, match="No such file"):
        load_settings(tmp_path / "missing.toml")


def test_secrets_are_masked_everywhere_they_could_be_printed() -> None:
    s = Settings(redis_url="redis://admin:hunter2@cache:6380/1", security_protocol="SASL_SSL",
                 sasl_username="svc", sasl_password="s3cret")
    shown = s.display()
    assert shown["redis_url"] == "redis://admin:****@cache:6380/1"
    assert shown["sasl_password"] == "****" and shown["sasl_username"] == "svc"
    for text in (repr(s), str(s), json.dumps(shown)):
        assert "hunter2" not in text and "s3cret" not in text
    assert s.kafka_security()["sasl_plain_password"] == "s3cret"  # still usable
    assert Settings(broker="kafka://a:1, b:2").bootstrap_servers == ["a:1", "b:2"]


def test_config_command_masks_secrets(cli) -> None:
    r = cli(["config"], CLAIMSCOPE_REDIS_URL="redis://:hunter2@127.0.0.1:1/0",
            CLAIMSCOPE_SASL_PASSWORD="s3cret")
    assert r.returncode == 0, r.stderr
    assert 'redis_url = "redis://:****@127.0.0.1:1/0"' in r.stdout
    assert "hunter2" not in r.stdout + r.stderr and "s3cret" not in r.stdout + r.stderr
    r = cli(["config", "--json"], CLAIMSCOPE_PARTITIONS="6")
    assert json.loads(r.stdout)["partitions"] == 6


@pytest.mark.parametrize("args", [["config"], ["query", "recent"], ["worker"],
                                  ["publish", "-"], ["watch"], ["bench"], ["up"]])
def test_wrong_url_is_one_line_from_every_command(cli, args: list[str]) -> None:
    r = cli(args, CLAIMSCOPE_BROKER="http://127.0.0.1:9092", input="")
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: CLAIMSCOPE_BROKER: expected kafka://")
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
