#!/usr/bin/env bash
# Cluster scale-out benchmark: 3 gateway nodes on a private 3-master Redis Cluster, SESSIONS
# sessions (default 3,000) written at RATE events/s in total, one SSE viewer per session,
# placed so each node serves a third of the sessions (the writes of a node's sessions go
# through the next node, so every notification crosses Redis). Measured twice in one run,
# against the same cluster: `store.redis.subscribe = "pattern"` (every node hears every
# write: the baseline) and `"per_session"` (each node subscribes to its viewers' sessions,
# sharded pub/sub). Per node: notifications received per second and their bytes
# (`agentgate_store_notifications_total`, `agentgate_store_notification_bytes_total`),
# subscriptions held; then the cluster's output bytes, gateway and Redis CPU per delivered
# event, and the viewers' exactness (lost, duplicated, out of order). Prints the table with
# both modes and the targets with PASS/MISS. See bench/README.md.
#
#   bench/cluster.sh                                   # full run: 3,000 sessions, ~2 min
#   SESSIONS=300 RATE=300 DURATION=5 WARMUP=1 bench/cluster.sh   # quick look
#   MODES=per_session bench/cluster.sh                 # one mode only
set -euo pipefail

BENCH_NAME=cluster
DURATION=${DURATION:-20}
WARMUP=${WARMUP:-5}
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SESSIONS=${SESSIONS:-3000}               # over all nodes (a multiple of 3)
RATE=${RATE:-1500}                       # events/s appended, over all sessions
MODES=${MODES:-"pattern per_session"}    # store.redis.subscribe values, in this order
GATEWAY_THREADS=${GATEWAY_THREADS:-1}    # [server] threads of each node
LOAD_THREADS=${LOAD_THREADS:-1}          # tokio workers of each load program
CONNECT_CONCURRENCY=${CONNECT_CONCURRENCY:-128}
CONNECT_PHASE_TIMEOUT=${CONNECT_PHASE_TIMEOUT:-120} # s for all clients to connect
DRAIN=${DRAIN:-10}                       # s clients get to receive the rest after the end
REDIS_BIN=${REDIS_BIN:-redis-server}
API_KEY=bench-api-key-0123456789
NODES=3

# Targets from the issue: each node hears only its own sessions (a third of the writes, with
# some slack for the complete events and timing), nothing lost or duplicated.
TARGET_SHARE_MAX=0.40

for n in "$SESSIONS" "$RATE" "$GATEWAY_THREADS" "$LOAD_THREADS" "$CONNECT_CONCURRENCY" \
    "$CONNECT_PHASE_TIMEOUT" "$DRAIN"; do
    [[ $n =~ ^[0-9]+$ ]] || bench_die "expected a whole number, got '$n'"
done
((SESSIONS % NODES == 0 && SESSIONS > 0)) || bench_die "SESSIONS must be a positive multiple of $NODES"
for m in $MODES; do
    [[ $m == pattern || $m == per_session ]] || bench_die "MODES takes 'pattern' and/or 'per_session', got '$m'"
done

bench_require redis-server:redis-server redis-cli:redis-tools timeout:coreutils curl:curl
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

bench_init
bench_build --bin agentgate --example sse_load
AGENTGATE_BIN=${AGENTGATE_BIN:-$BENCH_BIN_DIR/agentgate}
LOAD_BIN=$BENCH_BIN_DIR/examples/sse_load
CLK_TCK=$(getconf CLK_TCK)

declare -A RES=() # "<mode>.<key>" or "<mode>.<key>.<node>" -> value

# ---- the Redis Cluster ----------------------------------------------------------------------

# A port whose cluster bus port (port + 10000) is free too.
cluster_port() {
    local port
    while :; do
        port=$(bench_pick_port)
        ((port + 10000 < 65536)) && bench_port_is_free $((port + 10000)) && break
    done
    echo "$port"
}

REDIS_PORTS=()
for ((i = 0; i < NODES; i++)); do
    port=$(cluster_port)
    REDIS_PORTS+=("$port")
    mkdir -p "$BENCH_TMP/redis-$i"
    (cd "$BENCH_TMP/redis-$i" && exec "$REDIS_BIN" --port "$port" --bind 127.0.0.1 --save '' \
        --appendonly no --cluster-enabled yes --cluster-node-timeout 2000 \
        --notify-keyspace-events Ex --maxclients 20000 --logfile "$BENCH_TMP/redis-$i.log") &
    BENCH_PID[redis-$i]=$!
done
rcli() { timeout 10 redis-cli -p "$@"; }
deadline=$((SECONDS + START_TIMEOUT))
for ((i = 0; i < NODES; i++)); do
    until [[ $(rcli "${REDIS_PORTS[i]}" PING 2>/dev/null) == PONG ]]; do
        ((SECONDS < deadline)) || bench_die "redis-server not answering on port ${REDIS_PORTS[i]}"
        sleep 0.1
    done
done
addrs=()
for p in "${REDIS_PORTS[@]}"; do addrs+=("127.0.0.1:$p"); done
redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes >"$BENCH_TMP/cluster-create.log" 2>&1 ||
    bench_die "redis-cli --cluster create failed: $(tail -n 5 "$BENCH_TMP/cluster-create.log")"
cluster_ok() {
    local p
    for p in "${REDIS_PORTS[@]}"; do rcli "$p" CLUSTER INFO | grep -q 'cluster_state:ok' || return 1; done
}
until cluster_ok; do
    ((SECONDS < deadline + 30)) || bench_die "the cluster did not become ready"
    sleep 0.2
done
bench_log "redis cluster up: ${addrs[*]}"
REDIS_URLS=$(printf '"redis://%s", ' "${addrs[@]}")

# Bytes every master sent to its clients, summed (replies, pushes: what the gateways read).
redis_output_bytes() {
    local p sum=0 v
    for p in "${REDIS_PORTS[@]}"; do
        v=$(rcli "$p" INFO stats | awk -F: '/^total_net_output_bytes:/ { print $2 + 0 }')
        sum=$((sum + ${v:-0}))
    done
    echo "$sum"
}
redis_cpu_ticks() {
    local i sum=0
    for ((i = 0; i < NODES; i++)); do sum=$((sum + $(bench_cpu_ticks "${BENCH_PID[redis-$i]}"))); done
    echo "$sum"
}

# ---- one mode -------------------------------------------------------------------------------

write_conf() {
    local mode=$1 i=$2 port=$3 file=$BENCH_TMP/agentgate-$1-$2.toml
    cat >"$file" <<CONF
[server]
listen = ["127.0.0.1:$port"]
threads = $GATEWAY_THREADS

[server.limits]
max_connections = $((SESSIONS + 1000))
max_connections_per_address = $((SESSIONS + 1000))

[auth]
api_keys = ["$API_KEY"]
stream_token_secret = "bench-secret-bench-secret-bench-secret"

[store]
kind = "redis"

[store.redis]
urls = [${REDIS_URLS%, }]
cluster = true
subscribe = "$mode"

[store.quotas]
max_active_sessions_per_key = 1_000_000

[agent]
dispatch = "none"
CONF
    echo "$file"
}

# node_metric PORT SERIES — one unlabelled series from the node's /metrics (0 if absent).
node_metric() {
    curl -s --max-time 5 "http://127.0.0.1:$1/metrics" |
        awk -v s="$2" '$1 == s { print $2 + 0; found = 1 } END { if (!found) print 0 }'
}

# measure MODE — three nodes up, three load programs, readings into RES, nodes down.
measure() {
    local m=$1 i ports=() conf names="" go t0 t1 g0 g1 r0 r1 b0 b1 n0 n1 line kv out bound \
        window appended=0 append_rate=0 delivered=0 missing=0 dups=0 disorder=0 errors=0 connected=0
    for p in "${REDIS_PORTS[@]}"; do rcli "$p" FLUSHALL >/dev/null; done
    for ((i = 0; i < NODES; i++)); do
        ports+=("$(bench_pick_port)")
        conf=$(write_conf "$m" "$i" "${ports[i]}")
        if ! bench_agentgate_up "gw-$m-$i" "${ports[i]}" /healthz "$conf"; then
            RES[$m.status]="FAIL: node $i did not come up"
            return 0
        fi
        names+="gw-$m-$i "
    done
    go=$BENCH_TMP/go-$m
    bench_log "$m: $SESSIONS sessions, 1 viewer each on 3 nodes, $RATE events/s, ${WARMUP}s + ${DURATION}s"
    for ((i = 0; i < NODES; i++)); do
        # Sessions made and written through the next node, viewed on this one.
        "$LOAD_BIN" --addr "127.0.0.1:${ports[(i + 1) % NODES]}" --stream-addr "127.0.0.1:${ports[i]}" \
            --api-key "$API_KEY" --sessions $((SESSIONS / NODES)) --clients-per-session 1 \
            --rate $((RATE / NODES)) --duration "$DURATION" --warmup "$WARMUP" \
            --connect-concurrency "$CONNECT_CONCURRENCY" --connect-phase-timeout "$CONNECT_PHASE_TIMEOUT" \
            --go-file "$go" --idle-secs 300 --drain "$DRAIN" --threads "$LOAD_THREADS" \
            >"$BENCH_TMP/load-$m-$i.out" 2>"$BENCH_TMP/load-$m-$i.log" &
        BENCH_PID[load-$i]=$!
    done
    for ((i = 0; i < NODES; i++)); do
        bench_await_connected "$m.$i" "$BENCH_TMP/load-$m-$i.out" "$BENCH_TMP/load-$m-$i.log" "$names" "load-$i" || {
            RES[$m.status]=${RES[$m.$i.status]}
            for ((i = 0; i < NODES; i++)); do bench_stop "load-$i"; done
            return 0
        }
    done
    for ((i = 0; i < NODES; i++)); do
        RES[$m.subs.$i]=$(node_metric "${ports[i]}" agentgate_store_subscriptions)
        RES[$m.n0.$i]=$(node_metric "${ports[i]}" agentgate_store_notifications_total)
        RES[$m.b0.$i]=$(node_metric "${ports[i]}" agentgate_store_notification_bytes_total)
    done
    t0=$(bench_now) g0=0 r0=$(redis_cpu_ticks) b0=$(redis_output_bytes)
    for ((i = 0; i < NODES; i++)); do g0=$((g0 + $(bench_cpu_ticks "${BENCH_PID[gw-$m-$i]}"))); done
    touch "$go"
    # The append window ends when the first load program prints APPENDED (then it completes
    # its sessions, whose notifications are no appends): a sample counts only if no program
    # had printed it when the sample was complete.
    t1=$t0 g1=$g0 r1=$r0 b1=$b0
    for ((i = 0; i < NODES; i++)); do
        RES[$m.n1.$i]=${RES[$m.n0.$i]} RES[$m.b1.$i]=${RES[$m.b0.$i]}
    done
    bound=$((SECONDS + WARMUP + DURATION + DRAIN + 60))
    local st sr sb sg sn=() sbytes=() appended_any
    while ((SECONDS < bound)); do
        st=$(bench_now) sr=$(redis_cpu_ticks) sb=$(redis_output_bytes) sg=0
        for ((i = 0; i < NODES; i++)); do
            sg=$((sg + $(bench_cpu_ticks "${BENCH_PID[gw-$m-$i]}")))
            sn[i]=$(node_metric "${ports[i]}" agentgate_store_notifications_total)
            sbytes[i]=$(node_metric "${ports[i]}" agentgate_store_notification_bytes_total)
        done
        appended_any=0
        for ((i = 0; i < NODES; i++)); do
            grep -q '^APPENDED ' "$BENCH_TMP/load-$m-$i.out" && appended_any=1
        done
        ((appended_any)) && break
        t1=$st r1=$sr b1=$sb g1=$sg
        for ((i = 0; i < NODES; i++)); do
            RES[$m.n1.$i]=${sn[i]} RES[$m.b1.$i]=${sbytes[i]}
        done
        sleep 0.5
    done
    ((SECONDS < bound)) || bench_log "ERROR: append window past its bound"
    for ((i = 0; i < NODES; i++)); do
        while kill -0 "${BENCH_PID[load-$i]}" 2>/dev/null && ((SECONDS < bound)); do sleep 0.2; done
        bench_stop "load-$i"
    done
    window=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    for ((i = 0; i < NODES; i++)); do
        out=$BENCH_TMP/load-$m-$i.out
        line=$(grep '^RESULT ' "$out" || true)
        if [[ -z $line ]]; then
            bench_log "ERROR: load program $i printed no RESULT; last lines of its log:"
            tail -n 15 "$BENCH_TMP/load-$m-$i.log" | sed 's/^/    /' >&2
            RES[$m.status]="FAIL: no result from load program $i"
            continue
        fi
        declare -A r=()
        for kv in ${line#RESULT }; do r[${kv%%=*}]=${kv#*=}; done
        appended=$((appended + r[appended])) delivered=$((delivered + r[delivered]))
        append_rate=$(awk -v a="$append_rate" -v b="${r[append_rate]}" 'BEGIN { printf "%.1f", a + b }')
        missing=$((missing + r[missing])) dups=$((dups + r[duplicates]))
        disorder=$((disorder + r[out_of_order])) errors=$((errors + r[errors]))
        connected=$((connected + r[connected]))
        RES[$m.p50.$i]=${r[p50_ms]} RES[$m.p99.$i]=${r[p99_ms]}
        n0=${RES[$m.n0.$i]} n1=${RES[$m.n1.$i]}
        RES[$m.notif_s.$i]=$(awk -v a="$n0" -v b="$n1" -v w="$window" 'BEGIN { printf "%.0f", (b - a) / w }')
        RES[$m.kib_s.$i]=$(awk -v a="${RES[$m.b0.$i]}" -v b="${RES[$m.b1.$i]}" -v w="$window" 'BEGIN { printf "%.1f", (b - a) / w / 1024 }')
        RES[$m.share.$i]=$(awk -v a="$n0" -v b="$n1" -v w="$window" -v r="$RATE" 'BEGIN { printf "%.2f", (b - a) / w / r }')
        unset r
    done
    RES[$m.status]=${RES[$m.status]:-ok}
    RES[$m.window]=$window
    RES[$m.connected]=$connected
    RES[$m.appended_s]=$(awk -v a="$append_rate" 'BEGIN { printf "%.0f", a }')
    RES[$m.delivered]=$delivered
    RES[$m.missing]=$missing
    RES[$m.duplicates]=$dups
    RES[$m.out_of_order]=$disorder
    RES[$m.errors]=$errors
    RES[$m.redis_kib_s]=$(awk -v a="$b0" -v b="$b1" -v w="$window" 'BEGIN { printf "%.0f", (b - a) / w / 1024 }')
    # CPU per delivered event: one viewer per session, so deliveries = appended events.
    RES[$m.gw_us]=$(awk -v t=$((g1 - g0)) -v hz="$CLK_TCK" -v n="$appended" 'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print "n/a" }')
    RES[$m.redis_us]=$(awk -v t=$((r1 - r0)) -v hz="$CLK_TCK" -v n="$appended" 'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print "n/a" }')
    RES[$m.gw_cpu]=$(awk -v t=$((g1 - g0)) -v hz="$CLK_TCK" -v w="$window" 'BEGIN { printf "%.0f", 100 * t / hz / w }')
    RES[$m.redis_cpu]=$(awk -v t=$((r1 - r0)) -v hz="$CLK_TCK" -v w="$window" 'BEGIN { printf "%.0f", 100 * t / hz / w }')
    for n in $names; do bench_down "$n"; done
}

for m in $MODES; do measure "$m"; done

# ---- report ---------------------------------------------------------------------------------

get() { echo "${RES[$1.$2]:-n/a}"; }
ratio() {
    awk -v a="$(get per_session "$1")" -v b="$(get pattern "$1")" \
        'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b + 0 > 0) printf "%.2fx", a / b; else print "-" }'
}
verdict() { # verdict VALUE MAX
    awk -v v="$1" -v max="$2" 'BEGIN { if (v !~ /^[0-9.]+$/) print "n/a"; else if (v + 0 <= max + 0) printf "PASS (%s)", v; else printf "MISS (%s)", v }'
}

{
    echo
    echo "== cluster: $NODES nodes, $NODES masters, $SESSIONS sessions (1 viewer each, a third per node), $RATE events/s, ${WARMUP}s warm-up + ${DURATION}s measured =="
    echo "# host: $(uname -srm), $(nproc) CPUs; gateway threads $GATEWAY_THREADS, load threads $LOAD_THREADS; redis-server $("$REDIS_BIN" --version | awk '{print $3}' | sed 's/v=//')"
    row() { printf '%-40s %16s %16s %8s\n' "$1" "$2" "$3" "$4"; }
    row "metric" "pattern" "per_session" "per/pat"
    row "status" "$(get pattern status)" "$(get per_session status)" ""
    row "viewers connected" "$(get pattern connected)/$SESSIONS" "$(get per_session connected)/$SESSIONS" ""
    row "appended events/s (target $RATE)" "$(get pattern appended_s)" "$(get per_session appended_s)" "$(ratio appended_s)"
    for ((i = 0; i < NODES; i++)); do
        row "node $i: notifications received/s" "$(get pattern "notif_s.$i")" "$(get per_session "notif_s.$i")" "$(ratio "notif_s.$i")"
        row "node $i: share of all writes" "$(get pattern "share.$i")" "$(get per_session "share.$i")" ""
        row "node $i: notification KiB/s read" "$(get pattern "kib_s.$i")" "$(get per_session "kib_s.$i")" "$(ratio "kib_s.$i")"
        row "node $i: subscriptions held" "$(get pattern "subs.$i")" "$(get per_session "subs.$i")" ""
        row "node $i: delivery p50 / p99 (ms)" "$(get pattern "p50.$i") / $(get pattern "p99.$i")" \
            "$(get per_session "p50.$i") / $(get per_session "p99.$i")" ""
    done
    row "Redis output, all masters (KiB/s)" "$(get pattern redis_kib_s)" "$(get per_session redis_kib_s)" "$(ratio redis_kib_s)"
    row "deliveries (measured window)" "$(get pattern delivered)" "$(get per_session delivered)" ""
    row "lost / duplicated" "$(get pattern missing) / $(get pattern duplicates)" "$(get per_session missing) / $(get per_session duplicates)" ""
    row "out of order / all errors" "$(get pattern out_of_order) / $(get pattern errors)" "$(get per_session out_of_order) / $(get per_session errors)" ""
    row "gateway CPU, 3 nodes (% of a core)" "$(get pattern gw_cpu)" "$(get per_session gw_cpu)" "$(ratio gw_cpu)"
    row "Redis CPU, 3 masters (% of a core)" "$(get pattern redis_cpu)" "$(get per_session redis_cpu)" "$(ratio redis_cpu)"
    row "gateway CPU per delivered event (us)" "$(get pattern gw_us)" "$(get per_session gw_us)" "$(ratio gw_us)"
    row "Redis CPU per delivered event (us)" "$(get pattern redis_us)" "$(get per_session redis_us)" "$(ratio redis_us)"
    echo
    printf '%-40s %16s\n' "target (per_session)" "result"
    for ((i = 0; i < NODES; i++)); do
        printf '%-40s %16s\n' "node $i hears <= $TARGET_SHARE_MAX of the writes" "$(verdict "$(get per_session "share.$i")" $TARGET_SHARE_MAX)"
    done
    printf '%-40s %16s\n' "lost = 0" "$(verdict "$(get per_session missing)" 0)"
    printf '%-40s %16s\n' "duplicated = 0" "$(verdict "$(get per_session duplicates)" 0)"
} | tee -a "$BENCH_TMP/summary.txt"

bench_append_summary
