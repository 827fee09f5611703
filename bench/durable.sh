#!/usr/bin/env bash
# Durable Streams benchmark: agentgate's kind = "durable" route (memory store, and Redis on a
# private redis-server) against the protocol's Node reference server
# (@durable-streams/server, in memory), on the same work, in one run, driven by the same
# load program (bench/durable/load.mjs: plain node HTTP, no client library):
#   - appends/s with 1 and with PRODUCERS concurrent producers (each its own stream, one
#     request in flight each; BODY_BYTES per append), p50/p99 latency;
#   - READERS live SSE readers of one stream while MESSAGES appends arrive at RATE/s:
#     delivery latency append -> reader (p50/p99/max) and the server's peak RSS;
#   - catch-up reads: CATCHUP_READERS readers each read a stream of CATCHUP_MESSAGES x
#     CATCHUP_BYTES from -1 to the tail (following Stream-Next-Offset): MB/s.
# Then a table and the agentgate / reference ratios (bench/README.md has the latest).
#
#   bench/durable.sh                                   # full run (~3 min plus the build)
#   DURATION=3 READERS=200 SKIP_BUILD=1 bench/durable.sh   # quick
#   TARGETS="agentgate-memory reference" bench/durable.sh
set -euo pipefail

BENCH_NAME=durable
DURATION=${DURATION:-10}
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TARGETS=${TARGETS:-"agentgate-memory agentgate-redis reference"}
PRODUCERS=${PRODUCERS:-64}
BODY_BYTES=${BODY_BYTES:-100}
READERS=${READERS:-1000}
MESSAGES=${MESSAGES:-200}
RATE=${RATE:-20}
CATCHUP_MESSAGES=${CATCHUP_MESSAGES:-20000}
CATCHUP_BYTES=${CATCHUP_BYTES:-1000}
CATCHUP_READERS=${CATCHUP_READERS:-4}
GATEWAY_THREADS=${GATEWAY_THREADS:-2}
REDIS_BIN=${REDIS_BIN:-redis-server}
API_KEY=bench-api-key-0123456789
NPM_DIR=$BENCH_REPO/tests/durable
LOAD=$BENCH_REPO/bench/durable/load.mjs

bench_init
bench_require node:nodejs npm:npm redis-server:redis-server redis-cli:redis-tools
[[ -d $NPM_DIR/node_modules/@durable-streams/server ]] ||
    (cd "$NPM_DIR" && npm ci --no-audit --no-fund --loglevel=error)
read -r -a TARGET_LIST <<<"$(bench_targets agentgate-memory agentgate-redis reference)"
if [[ " ${TARGET_LIST[*]} " == *" agentgate-"* ]]; then
    bench_build -p agentgate
    AGENTGATE_BIN=$BENCH_BIN_DIR/agentgate
fi
BENCH_SETTINGS="producers 1 and $PRODUCERS x ${BODY_BYTES} B for ${DURATION}s; $READERS SSE readers, $MESSAGES appends at $RATE/s; catch-up $CATCHUP_READERS x $CATCHUP_MESSAGES x $CATCHUP_BYTES B; gateway threads $GATEWAY_THREADS"

declare -A RES=()

# gateway_config PORT STORE — an agentgate config: the durable route (the API key needed
# for writes and reads, like production) and an agent route for /healthz.
gateway_config() {
    cat <<TOML
[server]
listen = ["127.0.0.1:$1"]
threads = $GATEWAY_THREADS
[auth]
api_keys = ["$API_KEY"]
stream_token_secret = "bench-secret-bench-secret-bench-secret"
$2
[[routes]]
name = "streams"
kind = "durable"
path_prefix = "/v1/stream/"
[routes.durable]
max_stream_bytes = 1073741824
[[routes]]
name = "agent"
path_prefix = "/"
TOML
}

# rss_peak PID SECONDS_FILE — samples VmRSS (kB) of PID every 0.2 s until the file
# $BENCH_TMP/stop-rss exists; prints the peak in MB.
rss_peak() {
    local pid=$1 peak=0 rss
    while [[ ! -e $BENCH_TMP/stop-rss ]]; do
        rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
        ((rss > peak)) && peak=$rss
        sleep 0.2
    done
    echo $((peak / 1024))
}

# measure NAME URL — runs the three workloads against the server at URL (PID for RSS).
measure() {
    local name=$1 url=$2 pid=${BENCH_PID[$1]} out
    export DURABLE_AUTH=""
    [[ $name == agentgate-* ]] && export DURABLE_AUTH="Bearer $API_KEY"
    for producers in 1 "$PRODUCERS"; do
        out=$(node "$LOAD" appends "$url" "$producers" "$DURATION" "$BODY_BYTES")
        bench_log "$name appends x$producers: $out"
        RES[$name.appends$producers]=$(sed -n 's/.*appends_per_s=\([0-9]*\).*/\1/p' <<<"$out")
        RES[$name.appends${producers}_p99]=$(sed -n 's/.*p99_ms=\([0-9.]*\).*/\1/p' <<<"$out")
    done
    rm -f "$BENCH_TMP/stop-rss"
    rss_peak "$pid" >"$BENCH_TMP/rss.$name" &
    local sampler=$!
    out=$(node "$LOAD" fanout "$url" "$READERS" "$MESSAGES" "$RATE")
    touch "$BENCH_TMP/stop-rss"
    wait "$sampler"
    bench_log "$name fanout: $out"
    RES[$name.fan_p50]=$(sed -n 's/.*p50_ms=\([0-9.]*\).*/\1/p' <<<"$out")
    RES[$name.fan_p99]=$(sed -n 's/.*p99_ms=\([0-9.]*\).*/\1/p' <<<"$out")
    RES[$name.fan_delivered]=$(sed -n 's/.*delivered=\([0-9]*\) expected=\([0-9]*\).*/\1\/\2/p' <<<"$out")
    RES[$name.rss]=$(cat "$BENCH_TMP/rss.$name")
    out=$(node "$LOAD" catchup "$url" "$CATCHUP_MESSAGES" "$CATCHUP_BYTES" "$CATCHUP_READERS")
    bench_log "$name catch-up: $out"
    RES[$name.catchup]=$(sed -n 's/.*mb_per_s=\([0-9.]*\).*/\1/p' <<<"$out")
}

for target in "${TARGET_LIST[@]}"; do
    port=$(bench_pick_port)
    case $target in
        agentgate-memory)
            gateway_config "$port" $'[store]\nkind = "memory"' >"$BENCH_TMP/memory.toml"
            bench_agentgate_up "$target" "$port" /healthz "$BENCH_TMP/memory.toml" || continue
            ;;
        agentgate-redis)
            bench_redis_up --maxclients 20000
            gateway_config "$port" "$(printf '[store]\nkind = "redis"\n[store.redis]\nurls = ["redis://127.0.0.1:%s"]' "$REDIS_PORT")" \
                >"$BENCH_TMP/redis.toml"
            bench_agentgate_up "$target" "$port" /healthz "$BENCH_TMP/redis.toml" || continue
            ;;
        reference)
            bench_up "$target" "$port" /v1/stream/_health "$GATEWAY_CPUS" -- env PORT="$port" \
                DURABLE_SERVER_MODULE="$NPM_DIR/node_modules/@durable-streams/server/dist/index.js" \
                node "$BENCH_REPO/bench/durable/reference-server.mjs" || continue
            ;;
    esac
    measure "$target" "http://127.0.0.1:$port/v1/stream"
    bench_down "$target"
    [[ $target == agentgate-redis ]] && bench_down redis
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "-"; else printf "%.2f", a / b }'; }
{
    printf '%-18s %12s %12s %10s %10s %10s %12s %9s %12s\n' target "appends/s x1" "x$PRODUCERS" "x$PRODUCERS p99" \
        "fan p50" "fan p99" delivered "RSS MB" "catch-up MB/s"
    for t in "${TARGET_LIST[@]}"; do
        printf '%-18s %12s %12s %10s %10s %10s %12s %9s %12s\n' "$t" "${RES[$t.appends1]:--}" \
            "${RES[$t.appends$PRODUCERS]:--}" "${RES[$t.appends${PRODUCERS}_p99]:--}" "${RES[$t.fan_p50]:--}" \
            "${RES[$t.fan_p99]:--}" "${RES[$t.fan_delivered]:--}" "${RES[$t.rss]:--}" "${RES[$t.catchup]:--}"
    done
    for t in agentgate-memory agentgate-redis; do
        [[ -n ${RES[$t.appends1]:-} && -n ${RES[reference.appends1]:-} ]] || continue
        printf '%s / reference: appends x1 %s, x%s %s; fan-out p99 %s (lower is better); RSS %s; catch-up %s\n' "$t" \
            "$(ratio "${RES[$t.appends1]}" "${RES[reference.appends1]}")" "$PRODUCERS" \
            "$(ratio "${RES[$t.appends$PRODUCERS]}" "${RES[reference.appends$PRODUCERS]}")" \
            "$(ratio "${RES[$t.fan_p99]}" "${RES[reference.fan_p99]}")" \
            "$(ratio "${RES[$t.rss]}" "${RES[reference.rss]}")" \
            "$(ratio "${RES[$t.catchup]}" "${RES[reference.catchup]}")"
    done
    [[ ${#BENCH_FAIL[@]} -eq 0 ]] || echo "failed targets: $(bench_fail_list)"
} | tee "$BENCH_TMP/summary.txt"
bench_write_results
