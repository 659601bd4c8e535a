#!/usr/bin/env bash
# outpost alone, no Postfix: SIZE N SESSIONS [bun flags]; prints e2e msgs/s and user/sys CPU ms per message
# of the serve process (/proc/PID/stat). WT= the tree to run (default: this one). Root (smtp-sink -u postfix).
# WARMUP=M (default 0: cold): first M messages of the same size and sessions, delivered before measuring, so the
# figures are those of a relay that has been running (JIT compiled) rather than mostly its start-up.
set -u
SIZE=$1; N=$2; S=$3; shift 3
WARMUP=${WARMUP:-0}
WT=${WT:-$(cd "$(dirname "$0")/../.." && pwd)}
D=$(mktemp -d /var/tmp/outpost-q-XXXXXX)
sed "s|@DATA@|$D/data|" $WT/bench/relay/outpost.toml > $D/outpost.toml
(cd $WT && exec bun "$@" src/main.ts serve --config $D/outpost.toml) > $D/log 2>&1 &
P=$!
for i in $(seq 100); do ss -ltn | grep -q "127.0.0.1:2525 " && break; sleep 0.2; done
sleep 1
smtp-sink -u postfix -c 127.0.0.1:2600 1000 > $D/sink 2>&1 &
K=$!
sleep 0.3
send() { smtp-source -s $S -m $1 -l $SIZE -f from@example.org -t to@example.test -M bench.example.org 127.0.0.1:2525; }
# wait (bounded) until the log shows $1 deliveries in all; c = the count seen
delivered() { for i in $(seq 600); do c=$(grep -c "\"status\":\"delivered\"" $D/log); [ "${c:-0}" -ge $1 ] && break; sleep 0.05; done; }
if [ "$WARMUP" -gt 0 ]; then
  send $WARMUP; delivered $WARMUP
  sleep 1   # the warm-up's tail (JIT compilation, clean-up) stays out of the measured CPU
fi
read -r u0 s0 < <(awk '{print $14, $15}' /proc/$P/stat)
t0=$(date +%s.%N)
send $N
delivered $((WARMUP + N))
c=$((c - WARMUP))
t1=$(date +%s.%N)
read -r u1 s1 < <(awk '{print $14, $15}' /proc/$P/stat)
HZ=$(getconf CLK_TCK)
python3 -c "
w=$t1-$t0; n=$N
print(f'size=$SIZE n={n} s=$S warmup=$WARMUP e2e {n/w:.0f} msgs/s  user {($u1-$u0)*1000/$HZ/n:.3f} sys {($s1-$s0)*1000/$HZ/n:.3f} total {(($u1-$u0)+($s1-$s0))*1000/$HZ/n:.3f} ms/msg  sink={\"$c\"}')
"
kill -TERM $P; wait $P 2>/dev/null; kill $K; wait $K 2>/dev/null
rm -rf $D
