#!/usr/bin/env bash
# SSE fan-out benchmark: SESSIONS x CLIENTS_PER_SESSION stream clients (default 100 x 100 =
# 10,000) on one gateway with a Redis store, RATE events/s appended, with features.sse_fanout
# on and then off in the same run, against the same private redis-server. Per build: delivery
# latency append -> client (p50/p90/p99/max, examples/sse_load.rs), gateway RSS per idle
# connected client, Redis connections the gateway holds (idle and the most seen under load),
# CPU of gateway, load program and Redis while appending, and delivery errors. Then a table
# with both builds, the on/off ratios, and the targets with PASS/MISS. See bench/README.md.
#
#   bench/sse.sh                                     # full run: 10,000 clients, ~3 min
#   CLIENTS_PER_SESSION=10 DURATION=5 WARMUP=1 bench/sse.sh   # quick: 1,000 clients
#   FANOUT="on" bench/sse.sh                         # one build only
set -euo pipefail

BENCH_NAME=sse
DURATION=${DURATION:-20}
WARMUP=${WARMUP:-5}
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SESSIONS=${SESSIONS:-100}
CLIENTS_PER_SESSION=${CLIENTS_PER_SESSION:-100}
RATE=${RATE:-1000}                        # events/s appended, over all sessions
FANOUT=${FANOUT:-"on off"}                # builds to measure, in this order
GATEWAY_THREADS=${GATEWAY_THREADS:-2}     # [server] threads
READ_BUFFER=${READ_BUFFER:-}              # [server] read_buffer_bytes (unset: the gateway's default)
LOAD_THREADS=${LOAD_THREADS:-2}           # tokio workers of the load program
LOAD_CPUS=${LOAD_CPUS:-}                  # optional taskset CPU list for the load program
CONNECT_CONCURRENCY=${CONNECT_CONCURRENCY:-256}
CONNECT_PHASE_TIMEOUT=${CONNECT_PHASE_TIMEOUT:-180} # s for all clients to connect
DRAIN=${DRAIN:-10}                        # s clients get to receive the rest after the end
SETTLE=${SETTLE:-3}                       # s between "all connected" and the idle RSS reading
REDIS_BIN=${REDIS_BIN:-redis-server}
# Niceness for redis-server, the gateway and the load program, e.g. -10 on a machine shared
# with a build (negative needs root). 0 leaves them alone.
NICE=${NICE:-0}
API_KEY=bench-api-key-0123456789

# Targets from the issue.
TARGET_REDIS_CONNS=8
TARGET_IDLE_KIB=40  # issue 14 item 7 (Pushpin: 44-52 KiB on the same machine)
TARGET_P99_MS=50

[[ $NICE =~ ^-?[0-9]+$ ]] || bench_die "NICE must be a whole number, got '$NICE'"
[[ -z $READ_BUFFER || $READ_BUFFER =~ ^[0-9]+$ ]] || bench_die "READ_BUFFER must be a whole number, got '$READ_BUFFER'"
for n in "$SESSIONS" "$CLIENTS_PER_SESSION" "$RATE" "$GATEWAY_THREADS" "$LOAD_THREADS" \
    "$CONNECT_CONCURRENCY" "$CONNECT_PHASE_TIMEOUT" "$DRAIN" "$SETTLE"; do
    [[ $n =~ ^[0-9]+$ ]] || bench_die "expected a whole number, got '$n'"
done
for f in $FANOUT; do
    [[ $f == on || $f == off ]] || bench_die "FANOUT takes 'on' and/or 'off', got '$f'"
done
CLIENTS=$((SESSIONS * CLIENTS_PER_SESSION))

bench_require redis-server:redis-server redis-cli:redis-tools timeout:coreutils
# One socket per client in the load program, one per client in the gateway: raise the limit
# for both (children inherit it).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if (($(ulimit -n) < CLIENTS + 1000)) && [[ $(ulimit -n) != unlimited ]]; then
    bench_log "WARNING: open-file limit $(ulimit -n) is low for $CLIENTS clients (+1000)"
fi

bench_init
bench_build --bin agentgate --example sse_load
AGENTGATE_BIN=${AGENTGATE_BIN:-$BENCH_BIN_DIR/agentgate}
LOAD_BIN=$BENCH_BIN_DIR/examples/sse_load
CLK_TCK=$(getconf CLK_TCK)

declare -A RES=() # "<on|off>.<key>" -> value

# ---- helpers --------------------------------------------------------------------------------

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
# utime + stime in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
now() { date +%s.%N; }
# Busy ticks of the whole machine (all CPUs, everything but idle and iowait).
machine_busy() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
# Interrupt time of the machine: loopback TCP is mostly processed there, charged to no process.
machine_irq() { awk '$1 == "cpu" { print $7 + $8 }' /proc/stat; }
# Redis clients other than the redis-cli asking: the gateway is the only other client.
redis_clients() {
    local lines
    lines=$(timeout 5 redis-cli -p "$REDIS_PORT" CLIENT LIST 2>/dev/null | grep -c '^id=') || true
    echo $((${lines:-1} - 1))
}

write_conf() {
    local fanout=$1 port=$2 file=$BENCH_TMP/agentgate-fanout-$1.toml
    cat >"$file" <<CONF
[server]
listen = ["127.0.0.1:$port"]
threads = $GATEWAY_THREADS
${READ_BUFFER:+read_buffer_bytes = $READ_BUFFER}

# Every client comes from 127.0.0.1: lift the per-address cap (default 2,500) past the load.
[server.limits]
max_connections = $((CLIENTS + 1000))
max_connections_per_address = $((CLIENTS + 1000))

[auth]
api_keys = ["$API_KEY"]
stream_token_secret = "bench-secret-bench-secret-bench-secret"

[store]
kind = "redis"

[store.redis]
urls = ["redis://127.0.0.1:$REDIS_PORT"]

# Every load-test session runs under one API key: lift its running-session quota (default
# 1000) past the load's peak.
[store.quotas]
max_active_sessions_per_key = 1_000_000

[agent]
dispatch = "none"

[features]
sse_fanout = $([[ $fanout == on ]] && echo true || echo false)
CONF
    echo "$file"
}

# renice_all PID — every thread of PID (setpriority works per thread on Linux; threads
# started later inherit it).
renice_all() {
    ((NICE != 0)) || return 0
    local task
    for task in /proc/"$1"/task/*; do
        renice -n "$NICE" -p "${task##*/}" >/dev/null 2>&1 || true
    done
}

# ---- Redis ----------------------------------------------------------------------------------

bench_redis_up --notify-keyspace-events Ex --maxclients 20000

# ---- one build ------------------------------------------------------------------------------

# measure_build on|off — gateway up, load, readings into RES, gateway down.
measure_build() {
    local f=$1 port conf gw load out go deadline base idle t0 t1 g0 g1 l0 l1 r0 r1 \
        m0 m1 i0 i1 conns conns_max rss_max rss line kv load_bound
    redis-cli -p "$REDIS_PORT" FLUSHALL >/dev/null
    port=$(bench_pick_port)
    conf=$(write_conf "$f" "$port")
    if ! bench_agentgate_up "gw-$f" "$port" /healthz "$conf"; then
        RES[$f.status]="FAIL: gateway did not come up"
        return 0
    fi
    gw=${BENCH_PID[gw-$f]}
    renice_all "$gw"
    sleep 1
    base=$(rss_kib "$gw")
    RES[$f.rss_base_kib]=$base

    out=$BENCH_TMP/load-$f.out
    go=$BENCH_TMP/go-$f
    local cmd=("$LOAD_BIN" --addr "127.0.0.1:$port" --api-key "$API_KEY"
        --sessions "$SESSIONS" --clients-per-session "$CLIENTS_PER_SESSION" --rate "$RATE"
        --duration "$DURATION" --warmup "$WARMUP" --connect-concurrency "$CONNECT_CONCURRENCY"
        --connect-phase-timeout "$CONNECT_PHASE_TIMEOUT" --go-file "$go" --idle-secs 120
        --drain "$DRAIN" --threads "$LOAD_THREADS")
    [[ -n $LOAD_CPUS ]] && cmd=(taskset -c "$LOAD_CPUS" "${cmd[@]}")
    cmd=(nice -n "$NICE" "${cmd[@]}")
    bench_log "fanout $f: $SESSIONS sessions x $CLIENTS_PER_SESSION clients, $RATE events/s, ${WARMUP}s + ${DURATION}s"
    "${cmd[@]}" >"$out" 2>"$BENCH_TMP/load-$f.log" &
    BENCH_PID[load]=$!
    load=${BENCH_PID[load]}

    bench_await_connected "$f" "$out" "$BENCH_TMP/load-$f.log" "gw-$f" || return 0

    # Idle: every client connected, nothing appended yet.
    sleep "$SETTLE"
    idle=$(rss_kib "$gw")
    RES[$f.rss_idle_kib]=$idle
    RES[$f.redis_idle]=$(redis_clients)
    RES[$f.rss_per_client_kib]=$(awk -v a="$base" -v b="$idle" -v n="${RES[$f.c_connected]}" \
        'BEGIN { if (n > 0) printf "%.2f", (b - a) / n; else print "n/a" }')

    # Load: CPU over the append window (warm-up + measured: the last reading before the load
    # program prints APPENDED), peak RSS and Redis connections, sampled every 0.5 s.
    t0=$(now) g0=$(cpu_ticks "$gw") l0=$(cpu_ticks "$load") r0=$(cpu_ticks "${BENCH_PID[redis]}") m0=$(machine_busy) i0=$(machine_irq)
    t1=$t0 g1=$g0 l1=$l0 r1=$r0 m1=$m0 i1=$i0
    touch "$go"
    conns_max=${RES[$f.redis_idle]} rss_max=$idle
    load_bound=$((SECONDS + WARMUP + DURATION + DRAIN + 60))
    while kill -0 "$load" 2>/dev/null; do
        if ((SECONDS >= load_bound)); then
            bench_log "ERROR: load program still running after its bound; stopping it"
            break
        fi
        if ! grep -q '^APPENDED ' "$out"; then
            t1=$(now) g1=$(cpu_ticks "$gw") l1=$(cpu_ticks "$load") r1=$(cpu_ticks "${BENCH_PID[redis]}") m1=$(machine_busy) i1=$(machine_irq)
        fi
        conns=$(redis_clients)
        if ((conns > conns_max)); then conns_max=$conns; fi
        rss=$(rss_kib "$gw")
        if ((rss > rss_max)); then rss_max=$rss; fi
        sleep 0.5
    done
    bench_stop load
    RES[$f.redis_max]=$conns_max
    RES[$f.rss_max_kib]=$rss_max
    # The rest of the machine's busy time is other processes (e.g. a build next door).
    read -r "RES[$f.cpu_gw]" "RES[$f.cpu_load]" "RES[$f.cpu_redis]" "RES[$f.cpu_irq]" \
        "RES[$f.cpu_other]" < <(awk \
        -v t0="$t0" -v t1="$t1" -v g="$((g1 - g0))" -v l="$((l1 - l0))" -v r="$((r1 - r0))" \
        -v m="$((m1 - m0))" -v i="$((i1 - i0))" -v hz="$CLK_TCK" \
        'BEGIN { w = (t1 - t0) * hz; if (w <= 0) { print "n/a n/a n/a n/a n/a"; exit }
                o = m - g - l - r - i; if (o < 0) o = 0
                printf "%.0f %.0f %.0f %.0f %.0f\n", 100*g/w, 100*l/w, 100*r/w, 100*i/w, 100*o/w }')

    line=$(grep '^RESULT ' "$out" || true)
    if [[ -z $line ]]; then
        bench_log "ERROR: load program printed no RESULT; last lines of its log:"
        tail -n 15 "$BENCH_TMP/load-$f.log" | sed 's/^/    /' >&2
        RES[$f.status]="FAIL: no result from the load program"
    else
        for kv in ${line#RESULT }; do RES[$f.${kv%%=*}]=${kv#*=}; done
        RES[$f.status]=ok
        sed 's/^/    /' "$BENCH_TMP/load-$f.log" >&2
    fi
    bench_down "gw-$f"
}

for f in $FANOUT; do measure_build "$f"; done

# ---- report ---------------------------------------------------------------------------------

get() { echo "${RES[$1.$2]:-n/a}"; }
ratio() {
    awk -v a="$(get on "$1")" -v b="$(get off "$1")" \
        'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b + 0 > 0) printf "%.2fx", a / b; else print "-" }'
}
mib() { awk -v k="$1" 'BEGIN { if (k ~ /^[0-9]+$/) printf "%.1f", k / 1024; else print "n/a" }'; }
verdict() { # verdict VALUE MAX
    awk -v v="$1" -v max="$2" 'BEGIN { if (v !~ /^[0-9.]+$/) print "n/a"; else if (v + 0 <= max + 0) printf "PASS (%s)", v; else printf "MISS (%s)", v }'
}

{
    echo
    echo "== sse: $SESSIONS sessions x $CLIENTS_PER_SESSION clients = $CLIENTS SSE clients, $RATE events/s, ${WARMUP}s warm-up + ${DURATION}s measured =="
    echo "# host: $(uname -srm), $(nproc) CPUs; gateway threads $GATEWAY_THREADS, load threads $LOAD_THREADS${LOAD_CPUS:+ on CPUs $LOAD_CPUS}, nice $NICE${GATEWAY_CPUS:+, gateway on CPUs $GATEWAY_CPUS}; redis-server $("$REDIS_BIN" --version | awk '{print $3}' | sed 's/v=//')"
    printf '%-34s %16s %16s %8s\n' "metric" "fanout on" "fanout off" "on/off"
    row() { printf '%-34s %16s %16s %8s\n' "$1" "$2" "$3" "$4"; }
    row "status" "$(get on status)" "$(get off status)" ""
    row "clients connected" "$(get on c_connected)/$CLIENTS" "$(get off c_connected)/$CLIENTS" ""
    row "connect failures" "$(get on c_failed)" "$(get off c_failed)" ""
    row "time to connect all (s)" "$(get on c_secs)" "$(get off c_secs)" "$(ratio c_secs)"
    row "gateway RSS before clients (MiB)" "$(mib "$(get on rss_base_kib)")" "$(mib "$(get off rss_base_kib)")" ""
    row "gateway RSS all idle (MiB)" "$(mib "$(get on rss_idle_kib)")" "$(mib "$(get off rss_idle_kib)")" "$(ratio rss_idle_kib)"
    row "RSS per idle client (KiB)" "$(get on rss_per_client_kib)" "$(get off rss_per_client_kib)" "$(ratio rss_per_client_kib)"
    row "gateway RSS peak under load (MiB)" "$(mib "$(get on rss_max_kib)")" "$(mib "$(get off rss_max_kib)")" "$(ratio rss_max_kib)"
    row "Redis conns of gateway idle" "$(get on redis_idle)" "$(get off redis_idle)" ""
    row "Redis conns of gateway max" "$(get on redis_max)" "$(get off redis_max)" ""
    row "appended events/s (target $RATE)" "$(get on append_rate)" "$(get off append_rate)" "$(ratio append_rate)"
    row "failed appends" "$(get on append_errors)" "$(get off append_errors)" ""
    row "  by kind" "$(get on append_error_kinds)" "$(get off append_error_kinds)" ""
    row "append call p99 (ms)" "$(get on append_p99_ms)" "$(get off append_p99_ms)" "$(ratio append_p99_ms)"
    row "deliveries expected (measured)" "$(get on expected_deliveries)" "$(get off expected_deliveries)" ""
    row "deliveries received (measured)" "$(get on delivered)" "$(get off delivered)" "$(ratio delivered)"
    row "delivered events/s" "$(get on delivered_per_s)" "$(get off delivered_per_s)" "$(ratio delivered_per_s)"
    row "latency p50 (ms)" "$(get on p50_ms)" "$(get off p50_ms)" "$(ratio p50_ms)"
    row "latency p90 (ms)" "$(get on p90_ms)" "$(get off p90_ms)" "$(ratio p90_ms)"
    row "latency p99 (ms)" "$(get on p99_ms)" "$(get off p99_ms)" "$(ratio p99_ms)"
    row "latency max (ms)" "$(get on max_ms)" "$(get off max_ms)" "$(ratio max_ms)"
    row "missing / duplicate deliveries" "$(get on missing) / $(get on duplicates)" "$(get off missing) / $(get off duplicates)" ""
    row "out of order / unexpected" "$(get on out_of_order) / $(get on unexpected)" "$(get off out_of_order) / $(get off unexpected)" ""
    row "abnormal stream ends" "$(get on ended)" "$(get off ended)" ""
    echo "CPU while appending, % of one core ($(nproc) cores = $(($(nproc) * 100))%):"
    row "CPU % gateway" "$(get on cpu_gw)" "$(get off cpu_gw)" "$(ratio cpu_gw)"
    row "CPU % load program" "$(get on cpu_load)" "$(get off cpu_load)" "$(ratio cpu_load)"
    row "CPU % redis-server" "$(get on cpu_redis)" "$(get off cpu_redis)" "$(ratio cpu_redis)"
    row "CPU % interrupts (loopback TCP)" "$(get on cpu_irq)" "$(get off cpu_irq)" "$(ratio cpu_irq)"
    row "CPU % other processes" "$(get on cpu_other)" "$(get off cpu_other)" ""
    echo
    printf '%-34s %16s %16s\n' "target" "fanout on" "fanout off"
    printf '%-34s %16s %16s\n' "Redis conns (max) <= $TARGET_REDIS_CONNS" \
        "$(verdict "$(get on redis_max)" $TARGET_REDIS_CONNS)" "$(verdict "$(get off redis_max)" $TARGET_REDIS_CONNS)"
    printf '%-34s %16s %16s\n' "RSS per idle client <= $TARGET_IDLE_KIB KiB" \
        "$(verdict "$(get on rss_per_client_kib)" $TARGET_IDLE_KIB)" "$(verdict "$(get off rss_per_client_kib)" $TARGET_IDLE_KIB)"
    printf '%-34s %16s %16s\n' "latency p99 <= $TARGET_P99_MS ms" \
        "$(verdict "$(get on p99_ms)" $TARGET_P99_MS)" "$(verdict "$(get off p99_ms)" $TARGET_P99_MS)"
    printf '%-34s %16s %16s\n' "delivery errors = 0" \
        "$(verdict "$(get on errors)" 0)" "$(verdict "$(get off errors)" 0)"
} | tee -a "$BENCH_TMP/summary.txt"

bench_append_summary
