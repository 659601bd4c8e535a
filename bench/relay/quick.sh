#!/usr/bin/env bash
# outpost alone, no Postfix: SIZE N SESSIONS [bun flags]; prints e2e msgs/s and user/sys CPU ms per message
# of the serve process (/proc/PID/stat). WT= the tree to run (default: this one). Root (smtp-sink -u postfix).
# WARMUP=M (default 0: cold): first M messages of the same size and sessions, delivered before measuring, so the
# figures are those of a relay that has been running (JIT compiled) rather than mostly its start-up.
# Also smtp-source's and smtp-sink's CPU per message and the whole machine's (/proc/stat): what the 2 cores have
# left for the relay at a given rate.
# MAIN=1: also the CPU ms per message of serve's main (JavaScript) thread alone and the peak RSS. STRACE=1 (implies
# MAIN): also that thread's pwrite/pread/fsync/fdatasync calls (strace -c -p, no -f: not the other threads').
set -u
SIZE=$1; N=$2; S=$3; shift 3
WARMUP=${WARMUP:-0}
STRACE=${STRACE:-}; MAIN=${MAIN:-$STRACE}
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
send() { /usr/bin/time -a -o $D/srctime -f "%U %S" smtp-source -s $S -m $1 -l $SIZE -f from@example.org -t to@example.test -M bench.example.org 127.0.0.1:2525; }
# wait (bounded) until the log shows $1 deliveries in all; c = the count seen
delivered() { for i in $(seq 600); do c=$(grep -c "\"status\":\"delivered\"" $D/log); [ "${c:-0}" -ge $1 ] && break; sleep 0.05; done; }
if [ "$WARMUP" -gt 0 ]; then
  send $WARMUP; delivered $WARMUP
  sleep 1   # the warm-up's tail (JIT compilation, clean-up) stays out of the measured CPU
fi
read -r u0 s0 < <(awk '{print $14, $15}' /proc/$P/stat)
read -r ku0 ks0 < <(awk '{print $14, $15}' /proc/$K/stat); : > $D/srctime
read -r mt0 mi0 < <(awk '/^cpu / {t=0; for(i=2;i<=NF;i++) t+=$i; print t, $5+$6}' /proc/stat)
read -r mu0 ms0 < <(awk '{print $14, $15}' /proc/$P/task/$P/stat)
if [ -n "$STRACE" ]; then strace -c -o $D/strace -p $P & ST=$!; sleep 0.3; fi
t0=$(date +%s.%N)
send $N
delivered $((WARMUP + N))
c=$((c - WARMUP))
t1=$(date +%s.%N)
read -r u1 s1 < <(awk '{print $14, $15}' /proc/$P/stat)
read -r ku1 ks1 < <(awk '{print $14, $15}' /proc/$K/stat)
read -r mt1 mi1 < <(awk '/^cpu / {t=0; for(i=2;i<=NF;i++) t+=$i; print t, $5+$6}' /proc/stat)
read -r su ss < $D/srctime
read -r mu1 ms1 < <(awk '{print $14, $15}' /proc/$P/task/$P/stat)
if [ -n "$STRACE" ]; then kill -INT $ST; wait $ST 2>/dev/null; fi
HZ=$(getconf CLK_TCK)
python3 -c "
w=$t1-$t0; n=$N
print(f'size=$SIZE n={n} s=$S warmup=$WARMUP e2e {n/w:.0f} msgs/s  user {($u1-$u0)*1000/$HZ/n:.3f} sys {($s1-$s0)*1000/$HZ/n:.3f} total {(($u1-$u0)+($s1-$s0))*1000/$HZ/n:.3f} ms/msg  sink={\"$c\"}')
"
python3 -c "n=$N; ms=1000/$HZ; print(f'  load: smtp-source {($su+$ss)*1000/n:.3f} smtp-sink {(($ku1-$ku0)+($ks1-$ks0))*ms/n:.3f} ms/msg; machine {100*(1-($mi1-$mi0)/($mt1-$mt0)):.0f} % busy, {(($mt1-$mt0)-($mi1-$mi0))*ms/n:.3f} ms/msg all processes')"
if [ -n "$MAIN" ]; then
  python3 -c "print(f'  main thread {(($mu1-$mu0)+($ms1-$ms0))*1000/$HZ/$N:.3f} ms/msg  peak RSS {$(awk '/VmHWM/ {print $2}' /proc/$P/status)/1024:.0f} MiB')"
fi
if [ -n "$STRACE" ]; then
  grep -E " (pwrite64|pread64|fsync|fdatasync)$" $D/strace | awk -v n=$N '{printf "  main thread %s %d (%.1f/msg)\n", $NF, $4, $4/n}'
fi
kill -TERM $P; wait $P 2>/dev/null; kill $K; wait $K 2>/dev/null
rm -rf $D
