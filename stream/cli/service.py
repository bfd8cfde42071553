"""Service commands: broker, worker, config, publish, watch, query, up, bench.

Each is a few lines over the library (`stream.dev.services`, `stream.worker`, `stream.client`,
`stream.dev.up`, `stream.dev.bench`). Settings come from `CLAIMSCOPE_*` variables and `--config`;
a wrong URL or an unreachable broker/Redis ends any command with one line on stderr and
exit code 2, never a traceback.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from stream.cli.common import app, err, fail
from stream.cli.data import FormatOption, claims_in
from stream.settings import Codec, Settings, SettingsError, load_settings

Config = Annotated[Path | None, typer.Option(
    "--config", help="TOML or JSON settings file (else $CLAIMSCOPE_CONFIG); env vars win",
    show_default=False)]
AsJson = Annotated[bool, typer.Option("--json", help="JSON instead of a table")]


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn every error a user can cause or fix into `error: ...` and exit code 2."""
    import redis
    from aiokafka.errors import KafkaError as AioKafkaError
    from kafka.errors import KafkaError

    from stream.preflight import ServiceError
    from stream.worker import WorkerError

    try:
        yield
    except (SettingsError, ServiceError, WorkerError) as e:
        raise fail(str(e)) from None
    except redis.RedisError as e:
        raise fail(f"Redis: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    except (KafkaError, AioKafkaError) as e:
        raise fail(f"Kafka: {type(e).__name__}: {e}") from None


def settings_from(config: Path | None, **overrides: Any) -> Settings:
    with one_line_errors():
        return load_settings(config, **overrides)


def stop_on_sigterm() -> None:
    """SIGTERM behaves like Ctrl-C: the command's clean-up runs."""
    def _raise(signum: int, frame: object) -> None:
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, _raise)


# -- services ---------------------------------------------------------------------------
@app.command()
def broker(
    port: Annotated[int, typer.Option(help="port to listen on; 0 = a free one", min=0,
                                      max=65535)] = 9092,
    host: Annotated[str, typer.Option(help="address to bind and advertise")] = "127.0.0.1",
    config: Config = None,
) -> None:
    """Run the embedded Kafka-compatible broker (Tansu, memory only) in the foreground.

    Creates the ClaimScope topics with the configured partition count. Topics live in
    memory: they are gone when the broker stops. Ctrl-C or SIGTERM stops it.
    """
    from stream.dev.services import start_tansu
    from stream.preflight import create_topics

    settings = settings_from(config)
    stop_on_sigterm()
    with one_line_errors():
        proc = start_tansu(port or None, host=host, inherit_output=True)
    try:
        url = f"kafka://{host}:{proc.port}"
        with one_line_errors():
            create_topics(settings.model_copy(update={"broker": url}))
        err.print(f"broker listening on {url} (Tansu, memory storage); topics "
                  f"{', '.join(settings.topics.values())} with {settings.partitions} partitions"
                  f"; Ctrl-C stops it", highlight=False)
        code = proc.proc.wait()
        if code:
            raise fail(f"the broker exited with code {code}")
    except KeyboardInterrupt:
        pass
    finally:
        proc.stop()


@app.command()
def worker(
    web_port: Annotated[int | None, typer.Option(
        help="web/metrics port; 0 or unset = a free one (reported), so workers share a host",
        min=0, max=65535, show_default=False)] = None,
    noop: Annotated[bool, typer.Option(hidden=True, help="pass-through agent (bench)")] = False,
    config: Config = None,
) -> None:
    """Run one Faust worker: score claims from the claims topic until SIGTERM/Ctrl-C.

    Start several (same settings) to share the partitions; each reports its web port.
    """
    from stream.dev.noop import run_noop_worker
    from stream.worker import run_worker

    settings = settings_from(config, web_port=web_port)
    with one_line_errors():
        (run_noop_worker if noop else run_worker)(settings)


@app.command()
def config(config: Config = None, as_json: AsJson = False) -> None:
    """Print the effective settings (secrets masked), as TOML you can save as --config."""
    shown = settings_from(config).display()
    if as_json:
        print(json.dumps(shown, indent=2))
        return
    for name, value in shown.items():
        if value is None:
            print(f"# {name} = (unset)")
        else:
            print(f"{name} = {json.dumps(value)}")


# -- data in and out --------------------------------------------------------------------
@app.command()
def publish(
    path: Annotated[str, typer.Argument(help="claims file, or - for stdin")],
    compression: Annotated[Codec | None, typer.Option(
        help="codec of the record batches: none, gzip, snappy, lz4 or zstd (default: "
        "CLAIMSCOPE_OUTPUT_COMPRESSION, else none)", show_default=False)] = None,
    config: Config = None,
    fmt: FormatOption = "claim",
) -> None:
    """Validate claims and publish the valid ones (key = member_id).

    Each invalid line (or FHIR/X12 record) is reported on stdout; exits 1 if any was
    invalid, after still publishing the valid ones. Every claim is published as contract
    JSON on the claims topic: FHIR and X12 input is converted here.
    """
    from model.formats import ConversionError
    from model.progress import progress_bar
    from stream.client import ClaimPublisher, encode_claim
    from stream.preflight import check_broker, create_topics

    settings = settings_from(config)
    total = _count_lines(path) if fmt == "claim" else 0  # the progress bar's length
    sent = bad = 0
    with one_line_errors():
        check_broker(settings)
        create_topics(settings, [settings.topic_claims])
        publisher = ClaimPublisher(settings, compression=compression)
    with one_line_errors(), claims_in(fmt, path) as items, progress_bar(
            "publishing", total=total or 1, enabled=total >= 10_000) as advance:
        for item in items:
            if isinstance(item, ConversionError):
                bad += 1
                print(str(item), flush=False)
                continue
            raw, member = encode_claim(item)
            publisher.producer.send(publisher.topic, key=member.encode(), value=raw)
            sent += 1
            if sent % 1000 == 0:
                advance(1000)
        publisher.close()
    err.print(f"published {sent} claims to {settings.topic_claims}"
              + (f"; {bad} invalid records not sent" if bad else ""), highlight=False)
    raise typer.Exit(1 if bad else 0)


def _count_lines(path: str) -> int:
    """Lines in a file (for the progress bar); 0 for stdin or an unreadable file."""
    if path == "-":
        return 0
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


@app.command()
def watch(
    all_scores: Annotated[bool, typer.Option("--all", help="every Score, not only flagged")]
    = False,
    from_beginning: Annotated[bool, typer.Option(help="start at the oldest kept message")]
    = False,
    group: Annotated[str | None, typer.Option(
        help="consumer group to join (resume + share partitions); none by default")] = None,
    as_json: AsJson = False,
    config: Config = None,
) -> None:
    """Follow flagged Scores (or all with --all) as they are produced, until Ctrl-C."""
    from stream.client import FlaggedConsumer
    from stream.preflight import check_broker

    settings = settings_from(config)
    stop_on_sigterm()
    out = Console(highlight=False)
    with one_line_errors():
        check_broker(settings)
        consumer = FlaggedConsumer(settings, group_id=group, all_scores=all_scores,
                                   start="earliest" if from_beginning else "latest")
    try:
        with one_line_errors():
            for s in consumer:
                if as_json:
                    print(s.model_dump_json(), flush=True)
                else:
                    mark = "[red]FLAG[/red]" if s.flagged else "  ok"
                    out.print(f"{mark} {s.claim_id} score {s.score:.3f} member {s.member_id} "
                              f"provider {s.provider_id}: {s.explanation.reason}",
                              markup=True, soft_wrap=True)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()


query_app = typer.Typer(help="Read Scores from Redis: one claim, recent, flagged, by member "
                        "or provider.", no_args_is_help=True)
app.add_typer(query_app, name="query")


def _store(config: Path | None):
    from stream.preflight import check_redis
    from stream.store import ScoreStore

    settings = settings_from(config)
    with one_line_errors():
        check_redis(settings)
    return ScoreStore.from_settings(settings)


def _show(scores: list, as_json: bool, title: str) -> None:
    if as_json:
        print(json.dumps([s.model_dump(mode="json") for s in scores], indent=2))
        return
    table = Table(title=title, title_justify="left")
    for col in ("claim", "scored at", "score", "flag", "member", "provider", "reason"):
        table.add_column(col, overflow="fold")
    for s in scores:
        table.add_row(s.claim_id, s.scored_at.strftime("%Y-%m-%d %H:%M:%S"), f"{s.score:.3f}",
                      "[red]yes[/red]" if s.flagged else "", s.member_id, s.provider_id,
                      s.explanation.reason)
    Console().print(table)


@query_app.command("claim")
def query_claim(claim_id: Annotated[str, typer.Argument(help="claim id")],
                as_json: AsJson = False, config: Config = None) -> None:
    """One claim's Score with its explanation; exit 1 if it is not in Redis."""
    with one_line_errors():
        score = _store(config).get(claim_id)
    if score is None:
        err.print(f"claim {claim_id} not found (never scored, or expired)", highlight=False)
        raise typer.Exit(1)
    if as_json:
        print(score.model_dump_json(indent=2))
        return
    _show([score], False, f"claim {claim_id}")
    x = score.explanation
    if x.explained:
        Console(highlight=False).print(
            f"decided by {x.explained}: " + (", ".join(
                f"{t.token} (fall {t.attribution:.2f})" for t in x.top_tokens) or "no one token"))
    table = Table("layer/head", "attended pair", "weight",
                  title="each deciding token and the token it attends to most",
                  title_justify="left")
    for p in score.explanation.top_pairs:
        table.add_row(f"{p.layer}/{p.head}", f"{p.query}  <->  {p.key}", f"{p.weight:.3f}")
    Console().print(table)
    fields = ", ".join(f"{k} {v:.2f}" for k, v in score.explanation.field_importance.items())
    Console(highlight=False).print(f"field importance: {fields}\nchecks: "
                                   f"{', '.join(score.explanation.checks) or 'none fired'}")


@query_app.command("recent")
def query_recent(n: Annotated[int, typer.Argument(min=1, help="how many")] = 20,
                 as_json: AsJson = False, config: Config = None) -> None:
    """The n most recently scored claims, newest first."""
    with one_line_errors():
        _show(_store(config).recent(n), as_json, f"{n} most recent")


@query_app.command("flagged")
def query_flagged(n: Annotated[int, typer.Argument(min=1, help="how many")] = 20,
                  as_json: AsJson = False, config: Config = None) -> None:
    """The n most recently flagged claims, newest first."""
    with one_line_errors():
        _show(_store(config).flagged(n), as_json, f"{n} most recent flagged")


@query_app.command("member")
def query_member(member_id: Annotated[str, typer.Argument(help="member id")],
                 n: Annotated[int, typer.Option(min=1, help="how many")] = 20,
                 as_json: AsJson = False, config: Config = None) -> None:
    """A member's most recent Scores."""
    with one_line_errors():
        _show(_store(config).by_member(member_id, n), as_json, f"member {member_id}")


@query_app.command("provider")
def query_provider(provider_id: Annotated[str, typer.Argument(help="provider id")],
                   n: Annotated[int, typer.Option(min=1, help="how many")] = 20,
                   as_json: AsJson = False, config: Config = None) -> None:
    """A provider's most recent Scores."""
    with one_line_errors():
        _show(_store(config).by_provider(provider_id, n), as_json, f"provider {provider_id}")


# -- whole system -----------------------------------------------------------------------
@app.command()
def up(
    workers: Annotated[int, typer.Option(min=1, max=64, help="worker processes")] = 1,
    rate: Annotated[float, typer.Option(min=0, help="synthetic claims per second (0 = none)")]
    = 200.0,
    fraud_rate: Annotated[float, typer.Option(min=0, max=1, help="share of fraud in the feed")]
    = 0.05,
    duration: Annotated[float | None, typer.Option(
        min=0, help="stop after this many seconds (default: run until Ctrl-C)")] = None,
    redis_maxmemory_mb: Annotated[int, typer.Option(
        min=16, help="bound of the embedded redis-server; past it the oldest claim records "
        "are evicted")] = 512,
    broker_max_mb: Annotated[int, typer.Option(
        min=32, help="memory of the embedded broker (no retention) at which up rolls over to "
        "a fresh broker and workers")] = 512,
    config: Config = None,
) -> None:
    """Broker + Redis (embedded, unless configured), W workers and a synthetic feed, with a
    live table (a progress line every 5 s when not on a terminal); Ctrl-C or SIGTERM stops
    everything it started. The embedded services are bounded so it can run for a day."""
    from stream.dev.up import run_up

    settings = settings_from(config)
    stop_on_sigterm()
    with one_line_errors():
        code = run_up(settings, workers=workers, rate=rate, fraud_rate=fraud_rate,
                      duration=duration, redis_maxmemory_mb=redis_maxmemory_mb,
                      broker_max_mb=broker_max_mb)
    raise typer.Exit(code)


@app.command()
def bench(
    count: Annotated[int, typer.Option(min=100, help="claims per throughput run")] = 20_000,
    rate: Annotated[float, typer.Option(min=1, help="offered rate of the latency run")]
    = 500.0,
    rate_seconds: Annotated[float, typer.Option(min=1, help="length of the latency run")]
    = 10.0,
    workers: Annotated[int, typer.Option(min=1, max=16, help="workers per run")] = 1,
    as_json: AsJson = False,
    config: Config = None,
) -> None:
    """End-to-end throughput and latency: full pipeline vs a no-op agent, same broker.

    Uses its own topics, consumer groups and Redis key prefix (removed afterwards), so it
    can run beside live workers; starts a broker and Redis unless they are configured.
    """
    from stream.dev.bench import run_bench

    settings = settings_from(config)
    stop_on_sigterm()
    with one_line_errors():
        result = run_bench(settings, count=count, rate=rate, rate_seconds=rate_seconds,
                           workers=workers, log=None if as_json else err)
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        _bench_table(result)


def _bench_table(r: dict) -> None:
    p, n, a = r["pipeline"], r["noop"], r["at_rate"]
    table = Table("run", "claims/s", "p50 ms", "p95 ms", "p99 ms", title=(
        f"bench: {r['count']} claims, {r['workers']} worker(s), device {r['device']}"),
        title_justify="left")
    table.add_row("pipeline", f"{p['claims_per_s']:.0f}", f"{p['p50_ms']:.0f}",
                  f"{p['p95_ms']:.0f}", f"{p['p99_ms']:.0f}")
    table.add_row("no-op", f"{n['claims_per_s']:.0f}", f"{n['p50_ms']:.0f}",
                  f"{n['p95_ms']:.0f}", f"{n['p99_ms']:.0f}")
    table.add_row(f"at {a['offered_per_s']:.0f}/s", f"{a['achieved_per_s']:.0f}",
                  f"{a['p50_ms']:.0f}", f"{a['p95_ms']:.0f}", f"{a['p99_ms']:.0f}")
    Console().print(table)
    print(f"pipeline / no-op = {r['ratio']:.2f}")
    cpu = ", ".join(f"{k} {v:.0f}" for k, v in r["cpu_per_claim_us"].items())
    print(f"CPU per claim (µs): {cpu}")
    mem = r["resident_mb"]
    print(f"resident memory (MiB): worker {mem['worker']:.0f}, its "
          f"{mem['scoring_processes']:.0f} scoring process(es) {mem['scoring']:.0f}")
    conv = ", ".join(f"{k} {v:.0f}" for k, v in r["conversion_cpu_per_claim_us"].items())
    print(f"converting to contract claims, CPU per claim (µs): {conv}")
    d = r["parity_detail"]
    print(f"scoring path: {r['precision']}, {r['path']} (CPU native bf16: "
          f"{'yes' if r['cpu_bf16'] else 'no'}); against fp32 eager, {d['changed']} of "
          f"{d['claims']} decisions differ ({r['parity']:.2%}), scores by at most "
          f"{d['max_score_diff']:.4f}")
