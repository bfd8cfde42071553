"""Service settings: one frozen object, read from `CLAIMSCOPE_*` variables and a config file.

Precedence, highest first: keyword arguments (the CLI's own options), environment variables
`CLAIMSCOPE_<FIELD>` (upper case), the config file named by `--config` or `CLAIMSCOPE_CONFIG`
(TOML or JSON, same field names in lower case), then the defaults below. Unknown keys in a
config file are an error (a typo must not silently fall back to a default); unknown
`CLAIMSCOPE_*` variables are ignored because other tools share the prefix
(`CLAIMSCOPE_TANSU_BIN`, `CLAIMSCOPE_TEST_BROKER`).

Secrets: `sasl_password` is a `SecretStr`; a Redis password lives in `redis_url`
(`redis://:PASSWORD@host:6379/0`). `Settings.display()` and `repr()` mask both, so printing
or logging settings never shows a secret.

    >>> s = Settings(redis_url="redis://:hunter2@127.0.0.1:6379/0")
    >>> s.display()["redis_url"]
    'redis://:****@127.0.0.1:6379/0'
    >>> s.bootstrap_servers
    ['127.0.0.1:9092']
"""

from __future__ import annotations

import json
import os
import ssl
import tomllib
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    JsonConfigSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from model.claims import Format
from model.score import ANOMALY_FPR, ANOMALY_FPRS, Precision

ENV_PREFIX = "CLAIMSCOPE_"
# Kafka's compression codecs; every ClaimScope consumer reads all of them.
Codec = Literal["none", "gzip", "snappy", "lz4", "zstd"]
CODECS: tuple[str, ...] = Codec.__args__
MASK = "****"
_config_file: ContextVar[Path | None] = ContextVar("claimscope_config_file", default=None)


class SettingsError(ValueError):
    """Settings that cannot be used; the message is one line a person can act on."""


class Settings(BaseSettings):
    """Everything a ClaimScope worker, publisher or CLI command needs to find and use.

    Each field is also the environment variable `CLAIMSCOPE_<NAME>` (upper case).
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid",
                                      case_sensitive=False)

    # -- where --------------------------------------------------------------------------
    broker: str = Field("kafka://127.0.0.1:9092", description=(
        "Kafka bootstrap servers as kafka://host:port[,host:port]"))
    redis_url: str = Field("redis://127.0.0.1:6379/0", description=(
        "Redis URL (redis://, rediss:// for TLS, unix://); a password goes in the URL "
        "(redis://:PASSWORD@host:6379/0) and is masked when printed"))
    redis_ca_file: Path | None = Field(None, description=(
        "CA bundle that signs Redis's TLS certificate (rediss:// only; system CAs otherwise)"))

    # -- Kafka security (SASL/SSL); PLAINTEXT needs none of the rest ----------------------
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol")
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", description="SASL mechanism when security_protocol is SASL_*")
    sasl_username: str | None = Field(None, description="SASL user name")
    sasl_password: SecretStr | None = Field(None, description="SASL password (masked)")
    ssl_cafile: Path | None = Field(None, description=(
        "CA bundle that signs the brokers' certificates (SSL / SASL_SSL; system CAs otherwise)"))

    # -- topics -------------------------------------------------------------------------
    topic_claims: str = Field("claims", description="input topic: one JSON claim per message")
    topic_scored: str = Field("claims.scored", description="a Score for every valid claim")
    topic_flagged: str = Field("claims.flagged", description="Scores with flagged = true")
    topic_deadletter: str = Field("claims.deadletter", description=(
        "every message that is not a valid claim, with the reason and source offset"))
    input_formats: Annotated[tuple[Format, ...], NoDecode] = Field(("claim",), description=(
        "comma list of the input topics a worker reads: claim (topic_claims), fhir "
        "(topic_fhir: one FHIR R4 Claim, ExplanationOfBenefit or Bundle per message), x12 "
        "(topic_x12: one X12 837P interchange per message), e.g. claim,fhir,x12"))
    topic_fhir: str = Field("claims.fhir", description=(
        "FHIR input topic, read when input_formats has fhir"))
    topic_x12: str = Field("claims.x12", description=(
        "X12 837P input topic, read when input_formats has x12"))
    partitions: int = Field(4, ge=1, le=1024, description=(
        "partitions per topic when ClaimScope creates them; the most workers that can share "
        "the load"))
    replication_factor: int = Field(1, ge=1, le=16, description=(
        "replicas per topic when ClaimScope creates them (1 for a one-broker dev setup)"))
    output_compression: Codec = Field("none", description=(
        "codec of the worker's output topics (scored, flagged, dead letters) and of the "
        "console's feedback: none, gzip, snappy, lz4 or zstd; every codec is read on input "
        "whatever this says"))

    # -- Redis layout -------------------------------------------------------------------
    key_prefix: str = Field("cs:", description="prefix of every Redis key ClaimScope writes")
    claim_ttl_s: int = Field(7 * 86400, ge=1, description="lifetime of cs:claim:{id} records")
    recent_max: int = Field(10_000, ge=1, description="bound of the cs:recent and cs:flagged "
                            "indexes (oldest trimmed first)")
    index_max: int = Field(1_000, ge=1, description="bound of each cs:member:/cs:provider: "
                           "index")
    index_ttl_s: int = Field(30 * 86400, ge=1, description=(
        "lifetime of a member/provider index after its last write"))
    check_ttl_s: int = Field(90 * 86400, ge=1, description=(
        "lifetime of cross-claim check state (cs:check:*); duplicates older than this are "
        "not caught"))

    # -- batching -----------------------------------------------------------------------
    max_batch: int = Field(2000, ge=1, le=100_000, description=(
        "most claims one worker scores at once (stream.take's max); 1,000 measured ~1.4x "
        "the throughput of 500 on 2 cores, 2,000 ~1.05x that of 1,000, with no latency "
        "cost at 500 claims/s (docs/operations.md)"))
    max_wait: float = Field(0.05, gt=0, le=60, description=(
        "seconds a partial batch waits for more claims: the latency floor at low rates"))
    fetch_wait: float = Field(0.05, gt=0, le=10, description=(
        "seconds the broker may hold a fetch open waiting for data (Faust's fixed 1.5 s "
        "adds ~0.5-1 s of latency on Tansu, which holds fetches that long)"))
    max_message_bytes: int = Field(1_048_576, ge=1024, description=(
        "larger messages are dead-lettered unread (a claim is at most tens of KB)"))
    deadletter_raw_bytes: int = Field(64 * 1024, ge=256, le=512 * 1024, description=(
        "bytes of a bad message kept in its dead letter (the rest is cut, `truncated`: "
        "true); at most 512 KiB so a dead letter, JSON-escaped, fits Kafka's default 1 MB"))

    # -- model --------------------------------------------------------------------------
    checkpoint: str = Field("default", description='checkpoint directory, or "default" for '
                            "the shipped one")
    device: str = Field("auto", description="cpu, cuda, cuda:N, or auto (CUDA when present)")
    threshold: float | None = Field(None, ge=0, le=1, description=(
        "flag at score >= threshold; unset = the checkpoint's calibrated threshold"))
    anomaly_fpr: float = Field(ANOMALY_FPR, ge=min(ANOMALY_FPRS), le=max(ANOMALY_FPRS),
                               description=(
        "the anomaly channel's false-positive budget on clean claims: it flags a claim on "
        "its own past the checkpoint's cut for this budget"))
    precision: Precision = Field("auto", description=(
        "the encoder's number format: auto = bf16 on GPUs and on CPUs with AMX, else int8 "
        "linear layers (faster than bf16 on AVX512-BF16 without AMX, measured); fp32 is "
        "the reference the others are checked against"))
    scoring_processes: int = Field(0, ge=0, le=64, description=(
        "scoring processes per worker, each scoring its share of a batch (split by member) "
        "on its own core; 0 = one per core, at most 4"))
    torch_threads: int = Field(0, ge=0, le=256, description=(
        "torch intra-op threads per scoring process; 0 = the cores shared among them"))

    # -- worker -------------------------------------------------------------------------
    app_id: str = Field("claimscope", description=(
        "Faust app id = Kafka consumer group of the workers; workers with the same id share "
        "the partitions"))
    web_host: str = Field("127.0.0.1", description=(
        "address of the worker's web port (/health, /ready, /metrics, /stats); 0.0.0.0 in "
        "containers"))
    web_port: int = Field(0, ge=0, le=65535, description=(
        "worker web port; 0 = pick a free one (reported at start), so several workers can "
        "share a host"))
    broker_rebalance_timeout: float = Field(60.0, gt=0, le=3600, description=(
        "seconds a rebalance may take before the group drops a slow member"))
    broker_session_timeout: float = Field(60.0, gt=0, le=3600, description=(
        "seconds without heartbeats before a dead worker's partitions move to the others; "
        "on Tansu a joining worker also waits about half of it (measured: session 60 s / "
        "rebalance 6 s -> 30 s to join, session 6 s / rebalance 60 s -> 3 s); tests use 6"))
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="worker log level")

    # -- console (`claimscope console`, docs/console.md) --------------------------------
    console_token: SecretStr | None = Field(None, description=(
        "token that guards every console route (Bearer header, or ?token= once for a "
        "session cookie); unset = the console listens on 127.0.0.1 only (masked)"))
    topic_feedback: str = Field("claims.feedback", description=(
        "investigator labels from the console (JSON, contract in docs/console.md)"))

    # -- provider risk (docs/providers.md) ----------------------------------------------
    provider_profiles: bool = Field(True, description=(
        "keep each provider's billing profile in Redis as claims are scored, and rank "
        "providers by risk against their peers"))
    provider_risk_s: float = Field(5.0, gt=0, description=(
        "seconds between the leader worker's looks at whether to rank the providers: it "
        "ranks when claims were counted, within 5% of a core (docs/providers.md)"))
    topic_provider_risk: str = Field("providers.risk", description=(
        "snapshots of providers whose risk changed (JSON, model.peers.ProviderRisk)"))

    # -- validation ---------------------------------------------------------------------
    @field_validator("input_formats", mode="before")
    @classmethod
    def _formats(cls, value: object) -> object:
        """A comma list from the environment or a file; a list or tuple as it is."""
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not value:
            raise ValueError("name at least one input format (claim, fhir, x12)")
        return tuple(dict.fromkeys(value))  # each once, in the order given

    @field_validator("broker")
    @classmethod
    def _broker_url(cls, url: str) -> str:
        hosts = parse_broker_url(url)
        return "kafka://" + ",".join(hosts)

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"expected redis://host:port/db (or rediss://, unix://), got "
                             f"{mask_url(url)!r}")
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError(f"no host in {mask_url(url)!r}")
        try:
            parts.port  # noqa: B018  (raises on a non-numeric port)
        except ValueError:
            raise ValueError(f"bad port in {mask_url(url)!r}") from None
        return url

    @field_validator("key_prefix")
    @classmethod
    def _prefix(cls, prefix: str) -> str:
        if not prefix or any(c.isspace() for c in prefix) or "*" in prefix:
            raise ValueError("key_prefix must be non-empty, without spaces or '*'")
        return prefix

    @model_validator(mode="after")
    def _sasl_complete(self) -> Settings:
        if self.security_protocol.startswith("SASL") and not (
                self.sasl_username and self.sasl_password):
            raise ValueError(f"security_protocol {self.security_protocol} needs sasl_username "
                             "and sasl_password")
        return self

    # -- derived ------------------------------------------------------------------------
    @property
    def bootstrap_servers(self) -> list[str]:
        """`host:port` strings, as kafka-python and aiokafka take them."""
        return parse_broker_url(self.broker)

    @property
    def input_topics(self) -> dict[str, Format]:
        """Topic -> the format its messages are in, for each input format turned on."""
        by_format: dict[Format, str] = {"claim": self.topic_claims, "fhir": self.topic_fhir,
                                        "x12": self.topic_x12}
        return {by_format[f]: f for f in self.input_formats}

    @property
    def topics(self) -> dict[str, str]:
        """Every topic a worker reads or writes (the input topics of `input_formats`)."""
        inputs = {"claims" if f == "claim" else f: t for t, f in self.input_topics.items()}
        return {**inputs, "scored": self.topic_scored, "flagged": self.topic_flagged,
                "deadletter": self.topic_deadletter, "provider_risk": self.topic_provider_risk}

    def display(self) -> dict[str, Any]:
        """Every field as JSON-ready values, secrets masked: what `claimscope config` prints."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = MASK
            elif name == "redis_url":
                value = mask_url(value)
            elif isinstance(value, Path):
                value = str(value)
            out[name] = value
        return out

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """repr() and str() go through `display()`, so a logged Settings leaks nothing."""
        yield from self.display().items()

    @property
    def compression_type(self) -> str | None:
        """`output_compression` as kafka-python and aiokafka take it (None = uncompressed)."""
        return None if self.output_compression == "none" else self.output_compression

    def kafka_security(self) -> dict[str, Any]:
        """SASL/SSL keyword arguments shared by kafka-python and aiokafka clients."""
        if self.security_protocol == "PLAINTEXT":
            return {}
        kw: dict[str, Any] = {"security_protocol": self.security_protocol}
        if "SSL" in self.security_protocol:

            kw["ssl_context"] = ssl.create_default_context(
                cafile=str(self.ssl_cafile) if self.ssl_cafile else None)
        if self.security_protocol.startswith("SASL"):
            assert self.sasl_password is not None  # checked by _sasl_complete
            kw.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.sasl_username,
                      sasl_plain_password=self.sasl_password.get_secret_value())
        return kw

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments, then the environment, then the config file (if any)."""
        path = _config_file.get()
        if path is None:
            return init_settings, env_settings
        source: PydanticBaseSettingsSource = (
            TomlConfigSettingsSource(settings_cls, toml_file=path) if path.suffix == ".toml"
            else JsonConfigSettingsSource(settings_cls, json_file=path))
        return init_settings, env_settings, source


def parse_broker_url(url: str) -> list[str]:
    """`kafka://h1:9092,h2:9092` -> `["h1:9092", "h2:9092"]`; ValueError names what is wrong."""
    scheme, sep, rest = url.strip().partition("://")
    if not sep or scheme != "kafka":
        raise ValueError(f"expected kafka://host:port[,host:port], got {url!r}")
    hosts = [h.strip().rstrip("/") for h in rest.replace(";", ",").split(",") if h.strip()]
    if not hosts:
        raise ValueError(f"no host in {url!r}")
    for h in hosts:
        host, colon, port = h.rpartition(":")
        if not colon or not host or "@" in host or "/" in host or not port.isdigit() or not (
                0 < int(port) < 65536):
            raise ValueError(f"expected host:port in the broker URL, got {h!r}")
    return hosts


def mask_url(url: str) -> str:
    """The URL with its password (if any) replaced by ****."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))


def load_settings(config: Path | str | None = None, **overrides: Any) -> Settings:
    """Build the effective Settings; raise `SettingsError` with one readable line.

    `config` (else `$CLAIMSCOPE_CONFIG`) names a TOML or JSON file; `overrides` are the CLI's
    own options and win over everything (None values are dropped).
    """
    path = config or os.environ.get(ENV_PREFIX + "CONFIG") or None
    file = Path(path) if path else None
    if file is not None:
        check_config_file(file)
    token = _config_file.set(file)
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as e:
        raise SettingsError(describe_settings_error(e)) from None
    finally:
        _config_file.reset(token)


def check_config_file(path: Path) -> None:
    """Fail early, in one line, on a config file that is missing or does not parse."""
    if path.suffix not in (".toml", ".json"):
        raise SettingsError(f"config file {path}: use a .toml or .json file")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise SettingsError(f"config file {path}: {e.strerror}") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise SettingsError(f"config file {path} does not parse: {e}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"config file {path}: expected a table/object of settings")


def describe_settings_error(err: ValidationError) -> str:
    """`CLAIMSCOPE_BROKER: expected kafka://...` for each problem, joined by '; '."""
    out = []
    for e in err.errors(include_url=False, include_input=False):
        name = ".".join(str(p) for p in e["loc"])
        label = f"{ENV_PREFIX}{name.upper()}" if name else "settings"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown setting"
        out.append(f"{label}: {msg}")
    return "; ".join(out)
