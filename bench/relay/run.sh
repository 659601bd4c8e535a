#!/usr/bin/env bash
# outpost vs Postfix as the same loopback smart-host relay, in one session, one after the other:
#   smtp-source -> relay on 127.0.0.1:2525 -> queue (fsync before 250) -> SMTP client -> smtp-sink 127.0.0.1:2600
# Matrix: payload 2 KiB and 50 KiB x 10 and 50 smtp-source sessions, REPS repetitions each; per configuration
# the relays in RELAYS's order (Postfix, then outpost; `floor` adds ../floor/relay.ts), each freshly started
# (Postfix restarted, outpost with an empty data dir); INTERLEAVE=1: REPS rounds of one repetition per relay instead.
# WARMUP messages (same size and sessions, default 3000) go through each freshly started relay and are delivered
# before the measured runs, which so measure a relay that has been running (outpost's JIT has compiled its hot
# code, Postfix's process pools and caches are warm); WARMUP=0 measures the cold relay, as before.
# Every run is bounded (message count + timeout). Output: JSON lines in $OUT; ./summarize.py prints the tables.
# Needs root (Postfix), the Debian postfix package (smtp-source, smtp-sink), and bun on PATH.
set -euo pipefail
cd "$(dirname "$0")"
HERE=$(pwd)
ROOT=$(cd ../.. && pwd)
OUT=${OUT:-results/run-$(date -u +%Y%m%d-%H%M%S).jsonl}
REPS=${REPS:-3}
N_SMALL=${N_SMALL:-10000}   # messages per run, 2 KiB
N_LARGE=${N_LARGE:-5000}    # messages per run, 50 KiB
SESSIONS=${SESSIONS:-"10 50"}
SIZES=${SIZES:-"2048 51200"}
RELAYS=${RELAYS:-"postfix outpost"}   # also: floor (../floor/relay.ts, the libraries alone)
WARMUP=${WARMUP:-3000}     # messages per fresh relay before measuring; 0 = cold
INTERLEAVE=${INTERLEAVE:-}  # non-empty: REPS rounds of one repetition per relay (each started and warmed up afresh)
# outpost: `bun src/main.ts` by default; OUTPOST_BIN=dist/outpost for the compiled binary
OUTPOST_BIN=${OUTPOST_BIN:-}
# extra flags for `bun` (not the compiled binary), e.g. BUN_FLAGS="--cpu-prof-md --cpu-prof-dir=/tmp/prof"
BUN_FLAGS=${BUN_FLAGS:-}
export PATH="$ROOT/.tools/node_modules/.bin:$PATH"
mkdir -p "$(dirname "$OUT")"

PF_PIDFILE=/var/spool/postfix/pid/master.pid
port_up() { ss -ltn | grep -q "127.0.0.1:2525 "; }
wait_port_state() { # up|down
  for _ in $(seq 100); do
    if [ "$1" = up ] && port_up; then return 0; fi
    if [ "$1" = down ] && ! port_up; then return 0; fi
    sleep 0.2
  done
  echo "port 2525 did not go $1" >&2; return 1
}

postfix_start() {
  ./setup-postfix.sh >/dev/null
  postfix stop >/dev/null 2>&1 || true
  wait_port_state down
  # a run cut short leaves mail in this bench-only instance's queue; bench_relay.py wants it empty. Removed while
  # Postfix is stopped (what postsuper -d ALL does, which fails here: it cannot open maillog_file once it dropped root)
  for q in incoming active deferred hold maildrop corrupt bounce defer trace flush; do
    find "/var/spool/postfix/$q" -type f -delete 2>/dev/null || true
  done
  postfix start >/dev/null 2>&1
  wait_port_state up
  sleep 1
}
postfix_stop() { postfix stop >/dev/null 2>&1 || true; wait_port_state down; }

OP_PID=""
OP_DIR=""
outpost_start() {
  OP_DIR=$(mktemp -d /var/tmp/outpost-bench-XXXXXX)   # same disk as /var/spool/postfix
  sed "s|@DATA@|$OP_DIR/data|" outpost.toml > "$OP_DIR/outpost.toml"
  if [ -n "$OUTPOST_BIN" ]; then
    "$OUTPOST_BIN" serve --config "$OP_DIR/outpost.toml" >"$OP_DIR/outpost.log" 2>&1 &
  else
    (cd "$ROOT" && exec bun $BUN_FLAGS src/main.ts serve --config "$OP_DIR/outpost.toml") >"$OP_DIR/outpost.log" 2>&1 &
  fi
  OP_PID=$!
  wait_port_state up
  sleep 1
}
# TERM, up to 30 s to finish, then KILL
stop_pid() {
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq 150); do kill -0 "$1" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
outpost_stop() {
  [ -n "$OP_PID" ] || return 0
  stop_pid "$OP_PID"
  OP_PID=""
  rm -rf "$OP_DIR"
}
# the floor (../floor/relay.ts): outpost's SMTP libraries alone, holding mail in memory: the most a relay using
# them as outpost does reaches here
FL_PID=""
floor_start() {
  (cd "$ROOT" && exec bun bench/floor/relay.ts --connections "$1") >/dev/null 2>&1 &
  FL_PID=$!
  wait_port_state up
  sleep 1
}
floor_stop() {
  [ -n "$FL_PID" ] || return 0
  stop_pid "$FL_PID"
  FL_PID=""
}
trap 'outpost_stop; floor_stop; postfix_stop' EXIT

bench() { timeout 1800 python3 bench_relay.py --reps "$1" --warmup "$WARMUP" --out "$OUT" "${@:2}"; }

# relay $5, freshly started and warmed up, for $1 repetitions of one configuration ($2 size, $3 messages, $4 sessions)
run_relay() {
  local reps=$1 size=$2 n=$3 s=$4 relay=$5
  # the other relay's run left up to a GB of dirty pages (its queue files, its log): written back now, not in
  # the background of this relay's run, so neither pays for the other's writes
  sync
  case $relay in
    postfix)
      postfix_start
      bench "$reps" --label postfix --root-pidfile "$PF_PIDFILE" --postfix-queue --msgs "$n" --sessions "$s" --size "$size"
      postfix_stop ;;
    outpost)
      outpost_start
      bench "$reps" --label outpost --root-pid "$OP_PID" --log "$OP_DIR/outpost.log" --msgs "$n" --sessions "$s" --size "$size"
      outpost_stop ;;
    floor)
      floor_start "$s"
      bench "$reps" --label floor --root-pid "$FL_PID" --msgs "$n" --sessions "$s" --size "$size"
      floor_stop ;;
  esac
}

for size in $SIZES; do
  n=$N_SMALL; [ "$size" -gt 2048 ] && n=$N_LARGE
  for s in $SESSIONS; do
    if [ -n "$INTERLEAVE" ]; then
      # this host's speed drifts by tens of per cent within minutes: each round runs every relay once, fresh and
      # warmed up, so that each round's relays saw the same host
      for _ in $(seq "$REPS"); do
        for relay in $RELAYS; do run_relay 1 "$size" "$n" "$s" "$relay"; done
      done
    else
      for relay in $RELAYS; do run_relay "$REPS" "$size" "$n" "$s" "$relay"; done
    fi
  done
done
echo "done: $OUT"
python3 summarize.py "$OUT"
