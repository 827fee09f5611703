#!/usr/bin/env bash
# Fault suite: runs each fault scenario against real processes on loopback and prints one
# table — sessions, streams, events written and acknowledged, lost (acknowledged, never
# delivered to a live viewer), lost on replay (acknowledged, no longer in the log when one more
# reader replays it afterwards: the store's durability), duplicated, out of order, what agents
# saw fail (by call and status), the longest any viewer waited for its next event across the
# fault, and whether everything recovered by itself. See bench/README.md ("Faults").
#
# The load is `agentgate loadtest` with `session.resume = true`: every viewer reconnects the way
# a browser's EventSource does (`retry:`, `Last-Event-ID`); agents retry a failed call with its
# `Idempotency-Key` until it is acknowledged (`retry_appends`), so every event written is
# acknowledged once; every viewer checks it got every acknowledged event exactly once, in order.
#
#   bench/faults.sh                                   # every scenario, ~8 min
#   SCENARIOS="node_kill" bench/faults.sh             # one scenario
#   SKIP_BUILD=1 KEEP_TMP=1 bench/faults.sh           # reuse target/release; keep the logs
#
# Scenarios (SCENARIOS, in this order by default):
#   node_kill               3 gateways on one Redis behind nginx; 100 sessions x 3 viewers; one
#                           gateway gets SIGKILL mid-run
#   redis_restart_everysec  Redis with AOF (appendfsync everysec) gets SIGKILL mid-run and
#                           restarts on the same port 2 s later
#   redis_restart_always    the same with appendfsync always
#   stalled_readers         1,000 sessions x 2 viewers, one of each pair stops reading for
#                           STALL_SECS; beside a baseline run with the readers alone
#   failover_ack0           Redis Sentinel (master, 2 replicas, 3 sentinels); the master gets
#                           SIGKILL mid-run and a replica is promoted
#   failover_ack1           the same with ack_replicas = 1 (WAIT for a replica per write)
#   ack_cost                appends/s and latency with and without ack_replicas = 1
#   retention               a log capped at 20 events; stalled viewers fall behind the trimming
#                           and are told (`gap`), not left unaware
#   stalled_readers         (above)
#   upgrade                 `serve --upgrade` + SIGQUIT while viewers follow sessions and wrk
#                           loads an upstream route through the same gateway
#   overload                an upstream route's priority queue at 3x its room, two classes
#   upstream                a peer killed mid-response, a silent peer, a peer failing health
#                           checks under load
#
# Bounded: each loadtest by its scenario's max_duration_secs and LOADTEST_TIMEOUT; every
# process it started is stopped by PID on exit (lib.sh).
set -euo pipefail

BENCH_NAME=faults
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SCENARIOS=${SCENARIOS:-"node_kill redis_restart_everysec redis_restart_always failover_ack0 failover_ack1 ack_cost retention stalled_readers upgrade overload upstream"}
STALL_SECS=${STALL_SECS:-60}        # how long stalled viewers stop reading
STALLED=${STALLED:-1000}            # sessions in stalled_readers (each: 1 reader + 1 stalled)
LOADTEST_TIMEOUT=${LOADTEST_TIMEOUT:-400}
API_KEY=bench-api-key-0123456789
for n in "$STALL_SECS" "$STALLED" "$LOADTEST_TIMEOUT"; do
    [[ $n =~ ^[0-9]+$ ]] || bench_die "expected a whole number, got '$n'"
done

bench_require redis-server:redis-server redis-cli:redis-tools redis-sentinel:redis-sentinel \
    nginx:nginx jq:jq curl:curl wrk:wrk timeout:coreutils
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
bench_init
bench_build --bin agentgate --example bench_origin
AGENTGATE_BIN=$BENCH_BIN_DIR/agentgate
ORIGIN_BIN=$BENCH_BIN_DIR/examples/bench_origin
NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# ---- processes ------------------------------------------------------------------------------

# replica_synced PORT — waits until the replica on PORT has synchronised with its master.
replica_synced() {
    local t0=$SECONDS
    until redis-cli -p "$1" INFO replication 2>/dev/null | grep -q '^master_link_status:up'; do
        ((SECONDS - t0 < 30)) || bench_die "the replica on port $1 did not sync"
        sleep 0.1
    done
}

# redis_up NAME PORT ARGS... — a private redis-server on PORT (data in $BENCH_TMP/NAME), waits
# for PING.
redis_up() {
    local name=$1 port=$2 deadline
    shift 2
    mkdir -p "$BENCH_TMP/$name"
    redis-server --port "$port" --bind 127.0.0.1 --save '' --dir "$BENCH_TMP/$name" \
        --notify-keyspace-events Ex --maxclients 20000 --logfile "$BENCH_TMP/$name.log" "$@" &
    BENCH_PID[$name]=$!
    deadline=$((SECONDS + START_TIMEOUT))
    until [[ $(redis-cli -p "$port" PING 2>/dev/null) == PONG ]]; do
        kill -0 "${BENCH_PID[$name]}" 2>/dev/null || bench_die "$name exited: $(tail -n 5 "$BENCH_TMP/$name.log")"
        ((SECONDS < deadline)) || bench_die "$name not answering on port $port"
        sleep 0.05
    done
}

# gateway_conf NAME PORT REDIS_PORT [EXTRA_TOML [ADMIN_PORT]] — a gateway config on PORT
# (admin listener on ADMIN_PORT if given); prints its path.
gateway_conf() {
    local file=$BENCH_TMP/$1.toml admin="" store="urls = [\"redis://127.0.0.1:$3\"]"
    [[ -n ${5:-} ]] && admin="admin_listen = \"127.0.0.1:$5\""
    [[ -n ${REDIS_STORE_TOML:-} ]] && store=$REDIS_STORE_TOML
    cat >"$file" <<CONF
[server]
listen = ["127.0.0.1:$2"]
$admin
threads = 1
shutdown_grace_secs = 5

[auth]
api_keys = ["$API_KEY"]
stream_token_secret = "bench-secret-bench-secret-bench-secret"

[store]
kind = "redis"
${STORE_EXTRA:-}

[store.redis]
$store
timeout_ms = 1000

[store.quotas]
max_active_sessions_per_key = 1_000_000

[agent]
dispatch = "none"

[server.limits]
max_connections = 20000
max_connections_per_address = 20000
${4:-}
CONF
    echo "$file"
}

# gateway_up NAME PORT REDIS_PORT [EXTRA_TOML]
gateway_up() {
    bench_agentgate_up "$1" "$2" /healthz "$(gateway_conf "$@")" ||
        bench_die "gateway $1 did not start"
}

# nginx_up NAME PORT BACKEND_PORT... — nginx balancing over the gateways the way a plain L7
# load balancer would: round robin, a backend that refuses connections is skipped (and
# retried after 2 s), SSE unbuffered, keep-alive to the backends.
nginx_up() {
    local name=$1 port=$2 dir=$BENCH_TMP/$1 servers="" p
    shift 2
    for p in "$@"; do servers+="        server 127.0.0.1:$p max_fails=1 fail_timeout=2s;"$'\n'; done
    mkdir -p "$dir"
    cat >"$dir/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 20000; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    upstream gateways {
$servers        keepalive 256;
    }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://gateways;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 1h;
            proxy_next_upstream error timeout;
            proxy_connect_timeout 1s;
        }
    }
}
CONF
    bench_up "$name" "$port" /healthz "" -- "$NGINX_BIN" -c "$dir/nginx.conf" ||
        bench_die "nginx did not start"
}

# ---- the load and the table -----------------------------------------------------------------

# scenario_file NAME SESSIONS VIEWERS EVENTS THINK_MS [STALLED [STALL_MS [OFFLINE]]] — a
# resume scenario: all sessions in flight at once, each appending EVENTS one per call every
# THINK_MS, retrying a failed append with its Idempotency-Key until acknowledged; STALLED
# viewers of each session stop reading for STALL_MS (OFFLINE=true: disconnected meanwhile).
scenario_file() {
    local file=$BENCH_TMP/$1.scenario.toml
    cat >"$file" <<SCEN
[run]
sessions = $2
concurrency = $2
max_duration_secs = 120
request_timeout_ms = 10_000

[arrival]
rate_per_sec = 200.0

[session]
events = $4
batch_size = 1
event_bytes = 64
think_time_ms = $5
viewers = $3
stalled_viewers = ${6:-0}
stall_ms = ${7:-0}
stall_offline = ${8:-false}
resume = true
retry_appends = true
SCEN
    echo "$file"
}

# load_start NAME SCENARIO URL — starts the loadtest in the background (BENCH_PID[load]); its
# JSON report lands in $BENCH_TMP/NAME.json.
load_start() {
    timeout --kill-after=10 "$LOADTEST_TIMEOUT" "$AGENTGATE_BIN" loadtest --target "$3" \
        --api-key "$API_KEY" --scenario "$2" --json "$BENCH_TMP/$1.json" --quiet \
        >"$BENCH_TMP/$1.load.log" 2>&1 &
    BENCH_PID[load]=$!
}

# load_wait NAME — waits for the loadtest; 1 if it produced no report.
load_wait() {
    local status=0
    wait "${BENCH_PID[load]}" || status=$?
    unset "BENCH_PID[load]"
    if ((status != 0 && status != 3)) || [[ ! -s $BENCH_TMP/$1.json ]]; then
        bench_log "ERROR: loadtest $1 exited $status:"
        tail -n 15 "$BENCH_TMP/$1.load.log" | sed 's/^/    /' >&2
        return 1
    fi
}

ROWS=$BENCH_TMP/rows.tsv
: >"$ROWS"

# row SCENARIO JSON NOTE — one table row from a loadtest report.
row() {
    local name=$1 json=$2 note=${3:-}
    jq -r --arg name "$name" --arg note "$note" '
        def n(k): (.errors[k] // 0);
        def agent_errors: [.errors | to_entries[]
            | select(.key | test("^(init|append|complete|tools)_"))
            | "\(.key | sub("_status_"; " "))×\(.value)"] | join(", ");
        def unrecovered: [.errors | to_entries[]
            | select(.key | test("^(stream_|replay_stream|deadline|internal|not_started)"))
            | .value] | add // 0;
        [$name, .sessions.started, .viewers.streams,
         .events.written, .events.appended, n("event_lost"), n("replay_event_lost"),
         (n("event_duplicated") + n("replay_event_duplicated")),
         (n("event_out_of_order") + n("replay_event_out_of_order")),
         (agent_errors | if . == "" then "none" else . end),
         .viewers.reconnects, .viewers.longest_wait_ms,
         (if unrecovered == 0 then "yes" else "NO (\(unrecovered))" end), $note] | @tsv
    ' "$json" >>"$ROWS"
}

# ---- scenarios ------------------------------------------------------------------------------

node_kill() {
    local redis gw1 gw2 gw3 lb scen
    redis=$(bench_pick_port) gw1=$(bench_pick_port) gw2=$(bench_pick_port) gw3=$(bench_pick_port)
    lb=$(bench_pick_port)
    redis_up redis-nk "$redis"
    gateway_up gw1 "$gw1" "$redis"
    gateway_up gw2 "$gw2" "$redis"
    gateway_up gw3 "$gw3" "$redis"
    nginx_up lb "$lb" "$gw1" "$gw2" "$gw3"
    # 100 sessions x 3 viewers = 300 streams, spread over the nodes by the balancer; each
    # session appends for ~15 s.
    scen=$(scenario_file node_kill 100 3 150 100)
    load_start node_kill "$scen" "http://127.0.0.1:$lb"
    sleep 6
    bench_log "node_kill: SIGKILL gw2 (pid ${BENCH_PID[gw2]})"
    kill -KILL "${BENCH_PID[gw2]}"
    wait "${BENCH_PID[gw2]}" 2>/dev/null || true
    unset "BENCH_PID[gw2]"
    load_wait node_kill || return 0
    row node_kill "$BENCH_TMP/node_kill.json" "3 gateways behind nginx, 1 SIGKILLed at 6 s"
    bench_stop lb
    bench_stop gw1
    bench_stop gw3
    bench_stop redis-nk
}

# redis_restart POLICY — Redis with AOF under POLICY gets SIGKILL and comes back on its port.
redis_restart() {
    local policy=$1 name=redis_restart_$1 redis gw scen outage
    redis=$(bench_pick_port) gw=$(bench_pick_port)
    redis_up "redis-$policy" "$redis" --appendonly yes --appendfsync "$policy"
    gateway_up "gw-$policy" "$gw" "$redis"
    scen=$(scenario_file "$name" 100 1 150 100)
    load_start "$name" "$scen" "http://127.0.0.1:$gw"
    sleep 6
    bench_log "$name: SIGKILL redis-server (pid ${BENCH_PID[redis-$policy]}), restart in 2 s"
    kill -KILL "${BENCH_PID[redis-$policy]}"
    wait "${BENCH_PID[redis-$policy]}" 2>/dev/null || true
    unset "BENCH_PID[redis-$policy]"
    outage=$SECONDS
    sleep 2
    redis_up "redis-$policy" "$redis" --appendonly yes --appendfsync "$policy"
    bench_log "$name: redis-server back after $((SECONDS - outage)) s (AOF replayed)"
    load_wait "$name" || return 0
    row "$name" "$BENCH_TMP/$name.json" "AOF appendfsync $policy; SIGKILL at 6 s, back 2 s later"
    bench_stop "gw-$policy"
    bench_stop "redis-$policy"
}

stalled_readers() {
    local redis gw scen base_scen peak=0 rss base_rss gw_pid
    redis=$(bench_pick_port) gw=$(bench_pick_port)
    redis_up redis-stall "$redis"
    gateway_up gw-stall "$gw" "$redis"
    gw_pid=${BENCH_PID[gw-stall]}
    # The sessions outlast the stall by 20 s: one event a second.
    local events=$((STALL_SECS + 20))
    base_scen=$(scenario_file stalled_baseline "$STALLED" 1 "$events" 1000)
    # A short warm-up first, so that neither measured run pays for a cold start.
    load_start stalled_warmup "$(scenario_file stalled_warmup "$STALLED" 1 5 200)" "http://127.0.0.1:$gw"
    load_wait stalled_warmup || return 0
    base_rss=$(rss_kib "$gw_pid")
    load_start stalled_baseline "$base_scen" "http://127.0.0.1:$gw"
    while kill -0 "${BENCH_PID[load]}" 2>/dev/null; do
        rss=$(rss_kib "$gw_pid"); ((rss > peak)) && peak=$rss
        sleep 1
    done
    load_wait stalled_baseline || return 0
    RES[stall.base_peak]=$peak
    row stalled_baseline "$BENCH_TMP/stalled_baseline.json" "$STALLED readers alone; gateway peak RSS $((peak / 1024)) MiB"
    scen=$(scenario_file stalled_readers "$STALLED" 2 "$events" 1000 1 $((STALL_SECS * 1000)))
    peak=0
    load_start stalled_readers "$scen" "http://127.0.0.1:$gw"
    while kill -0 "${BENCH_PID[load]}" 2>/dev/null; do
        rss=$(rss_kib "$gw_pid"); ((rss > peak)) && peak=$rss
        sleep 1
    done
    load_wait stalled_readers || return 0
    local p99_base p99 ratio per
    p99_base=$(jq '.latency_ms.delivery.p99' "$BENCH_TMP/stalled_baseline.json")
    p99=$(jq '.latency_ms.delivery.p99' "$BENCH_TMP/stalled_readers.json")
    ratio=$(awk -v a="$p99" -v b="$p99_base" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
    per=$(awk -v a="$peak" -v b="${RES[stall.base_peak]}" -v n="$STALLED" 'BEGIN { printf "%.1f", (a - b) / n }')
    row stalled_readers "$BENCH_TMP/stalled_readers.json" \
        "+$STALLED viewers stalled ${STALL_SECS} s: readers' delivery p99 $p99 ms vs $p99_base ms alone (${ratio}x); gateway peak RSS $((peak / 1024)) MiB, +$per KiB per stalled viewer (base RSS $((base_rss / 1024)) MiB)"
    bench_stop gw-stall
    bench_stop redis-stall
}

upgrade() {
    local redis gw origin conf scen wrk_out new_pid pidfile
    redis=$(bench_pick_port) gw=$(bench_pick_port) origin=$(bench_pick_port)
    redis_up redis-up "$redis"
    bench_up origin "$origin" /healthz "" -- "$ORIGIN_BIN" --addr "127.0.0.1:$origin" --threads 1 ||
        bench_die "bench_origin did not start"
    pidfile=$BENCH_TMP/upgrade.pid
    conf=$(gateway_conf gw-up "$gw" "$redis" "
[upstreams.origin]
peers = [\"127.0.0.1:$origin\"]

[[routes]]
name = \"origin\"
kind = \"upstream\"
path_prefix = \"/origin/\"
upstream = \"origin\"

[[routes]]
name = \"agent\"
kind = \"agent\"
")
    sed -i "s|^shutdown_grace_secs = 5|shutdown_grace_secs = 20\npid_file = \"$pidfile\"\nupgrade_sock = \"$BENCH_TMP/upgrade.sock\"|" "$conf"
    bench_agentgate_up gw-up "$gw" /healthz "$conf" || bench_die "gateway did not start"
    scen=$(scenario_file upgrade 250 4 150 100)
    load_start upgrade "$scen" "http://127.0.0.1:$gw"
    wrk_out=$BENCH_TMP/upgrade.wrk
    timeout 40 wrk -t 1 -c 32 -d 25s --latency "http://127.0.0.1:$gw/origin/x" >"$wrk_out" 2>&1 &
    BENCH_WRK_PID=$!
    sleep 6
    bench_log "upgrade: serve --upgrade, then SIGQUIT the old process (pid ${BENCH_PID[gw-up]})"
    env RUST_LOG="$AGENTGATE_LOG" "$AGENTGATE_BIN" serve --upgrade --config "$conf" \
        >"$BENCH_TMP/gw-new.log" 2>&1 &
    new_pid=$!
    BENCH_PID[gw-new]=$new_pid
    BENCH_STOP_SIGNAL[gw-new]=INT
    local waited=0
    until [[ -S $BENCH_TMP/upgrade.sock ]]; do
        ((waited++ < 100)) || bench_die "upgrade: the new process did not open its upgrade socket"
        sleep 0.1
    done
    kill -QUIT "${BENCH_PID[gw-up]}"
    load_wait upgrade || true
    wait "$BENCH_WRK_PID" || true
    BENCH_WRK_PID=""
    local parsed rps errors
    parsed=$(bench_parse_wrk <"$wrk_out")
    rps=$(cut -f1 <<<"$parsed") errors=$(cut -f4 <<<"$parsed")
    row upgrade "$BENCH_TMP/upgrade.json" "wrk through an upstream route meanwhile: $rps req/s, $errors failed requests (non-2xx or socket errors)"
    bench_stop gw-new
    bench_stop gw-up
    bench_stop origin
    bench_stop redis-up
}

# wrk_stats FILE — "requests<TAB>non-2xx<TAB>socket errors<TAB>p99 ms" of a wrk --latency run.
wrk_stats() {
    awk '
        function ms(v,   n) {
            n = v + 0
            if (v ~ /us$/) return n / 1000
            if (v ~ /ms$/) return n
            if (v ~ /m$/)  return n * 60000
            if (v ~ /s$/)  return n * 1000
            return n
        }
        $1 == "99%" { p99 = ms($2) }
        / requests in / { requests = $1 }
        /Non-2xx or 3xx responses:/ { non2xx = $NF }
        /Socket errors:/ { gsub(/,/, ""); sock = $4 + $6 + $8 + $10 }
        END { printf "%d\t%d\t%d\t%.1f\n", requests, non2xx, sock, p99 }' "$1"
}

ROWS2=$BENCH_TMP/rows2.tsv
: >"$ROWS2"
# row2 SCENARIO WHAT OUTCOME — a row of the second table (overload, upstream faults).
row2() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$ROWS2"; }

# upstream_conf NAME PORT REDIS_PORT ADMIN_PORT UPSTREAM_TOML ROUTE_TOML — a gateway with one
# upstream route `/origin/` besides the agent API.
upstream_conf() {
    gateway_conf "$1" "$2" "$3" "
[upstreams.origin]
$5

[[routes]]
name = \"origin\"
kind = \"upstream\"
path_prefix = \"/origin/\"
upstream = \"origin\"
${6:-}

[[routes]]
name = \"agent\"
kind = \"agent\"
" "$4"
}

overload() {
    local redis gw origin conf peak=0 rss hi lo probe
    redis=$(bench_pick_port) gw=$(bench_pick_port) origin=$(bench_pick_port)
    redis_up redis-ov "$redis"
    # A fixed 10 ms service time: 8 slots serve 800 requests/s.
    bench_up origin-ov "$origin" /healthz "" -- "$ORIGIN_BIN" --addr "127.0.0.1:$origin" \
        --threads 1 --delay-ms 10 || bench_die "bench_origin did not start"
    conf=$(upstream_conf gw-ov "$gw" "$redis" "" "peers = [\"127.0.0.1:$origin\"]" "
[routes.priority_queue]
max_in_flight = 8
max_queue = 8
max_wait_ms = 1000
trusted_proxies = [\"127.0.0.1\"]")
    bench_agentgate_up gw-ov "$gw" /healthz "$conf" || bench_die "gateway did not start"
    # 3x the route's room (8 running + 8 queued = 16): 8 high-priority connections (20%)
    # and 40 low-priority ones (80%), closed loop, 20 s.
    timeout 40 wrk -t 1 -c 8 -d 20s --latency -H "x-priority: 9" \
        "http://127.0.0.1:$gw/origin/high" >"$BENCH_TMP/ov-high.wrk" 2>&1 &
    hi=$!
    timeout 40 wrk -t 1 -c 40 -d 20s --latency -H "x-priority: 1" \
        "http://127.0.0.1:$gw/origin/low" >"$BENCH_TMP/ov-low.wrk" 2>&1 &
    lo=$!
    sleep 5
    probe=$(curl -s -o /dev/null -D - -H "x-priority: 0" "http://127.0.0.1:$gw/origin/probe" |
        tr -d '\r' | awk 'NR == 1 { s = $2 } tolower($1) == "retry-after:" { r = $2 } END { print s " Retry-After " (r == "" ? "none" : r) }')
    while kill -0 "$hi" 2>/dev/null || kill -0 "$lo" 2>/dev/null; do
        rss=$(rss_kib "${BENCH_PID[gw-ov]}"); ((rss > peak)) && peak=$rss
        sleep 0.5
    done
    wait "$hi" || true
    wait "$lo" || true
    local h l
    IFS=$'\t' read -r -a h < <(wrk_stats "$BENCH_TMP/ov-high.wrk")
    IFS=$'\t' read -r -a l < <(wrk_stats "$BENCH_TMP/ov-low.wrk")
    row2 overload "priority queue 8 running + 8 queued, max_wait 1000 ms; origin 10 ms (800 req/s); 8 high + 40 low connections (3x)" \
        "high: ${h[0]} requests, ${h[1]} non-2xx, ${h[2]} socket errors, p99 ${h[3]} ms; low: ${l[0]} requests, ${l[1]} shed (non-2xx), ${l[2]} socket errors; a priority-0 probe got ${probe}; gateway peak RSS $((peak / 1024)) MiB"
    bench_stop gw-ov
    bench_stop origin-ov
    bench_stop redis-ov
}

# failover ACK_REPLICAS — Redis Sentinel (master, replica, 3 sentinels); the master gets
# SIGKILL mid-run; the sentinels promote the replica.
failover() {
    local ack=$1 name=failover_ack$1 master r1 r2 gw i s conf sentinels=() urls="" t0 scen
    master=$(bench_pick_port) r1=$(bench_pick_port) r2=$(bench_pick_port) gw=$(bench_pick_port)
    redis_up "fo-master$ack" "$master" --appendonly yes --appendfsync everysec
    # Two replicas: after the promotion one is left to acknowledge writes (ack_replicas = 1).
    redis_up "fo-replica$ack-1" "$r1" --replicaof 127.0.0.1 "$master"
    redis_up "fo-replica$ack-2" "$r2" --replicaof 127.0.0.1 "$master"
    replica_synced "$r1"
    replica_synced "$r2"
    for i in 1 2 3; do
        s=$(bench_pick_port)
        mkdir -p "$BENCH_TMP/fo-sentinel$ack-$i"
        conf=$BENCH_TMP/fo-sentinel$ack-$i/sentinel.conf
        printf '%s\n' "port $s" "bind 127.0.0.1" "dir $BENCH_TMP/fo-sentinel$ack-$i" \
            "sentinel monitor faults 127.0.0.1 $master 2" \
            "sentinel down-after-milliseconds faults 1000" \
            "sentinel failover-timeout faults 5000" >"$conf"
        redis-sentinel "$conf" >"$BENCH_TMP/fo-sentinel$ack-$i.log" 2>&1 &
        BENCH_PID[fo-sentinel$ack-$i]=$!
        sentinels+=("$s")
        urls+="${urls:+, }\"redis://127.0.0.1:$s\""
    done
    t0=$SECONDS
    until [[ $(redis-cli -p "${sentinels[0]}" SENTINEL MASTER faults 2>/dev/null | awk 'p { print; exit } $0 == "num-other-sentinels" { p = 1 }') == 2 &&
        $(redis-cli -p "${sentinels[0]}" SENTINEL MASTER faults 2>/dev/null | awk 'p { print; exit } $0 == "num-slaves" { p = 1 }') == 2 ]]; do
        ((SECONDS - t0 < 30)) || bench_die "$name: the sentinels did not find each other and the replica"
        sleep 0.2
    done
    REDIS_STORE_TOML="urls = [$urls]
sentinel_master = \"faults\"
ack_replicas = $ack
ack_timeout_ms = 500" gateway_up "gw-fo$ack" "$gw" "$master"
    scen=$(scenario_file "$name" 100 1 150 100)
    load_start "$name" "$scen" "http://127.0.0.1:$gw"
    sleep 6
    bench_log "$name: SIGKILL the master (pid ${BENCH_PID[fo-master$ack]})"
    kill -KILL "${BENCH_PID[fo-master$ack]}"
    wait "${BENCH_PID[fo-master$ack]}" 2>/dev/null || true
    unset "BENCH_PID[fo-master$ack]"
    load_wait "$name" || return 0
    row "$name" "$BENCH_TMP/$name.json" "Sentinel, 2 replicas: master SIGKILLed at 6 s, a replica promoted; ack_replicas = $ack; append p50 $(jq '.latency_ms.append.p50' "$BENCH_TMP/$name.json") ms, p99 $(jq '.latency_ms.append.p99' "$BENCH_TMP/$name.json") ms"
    bench_stop "gw-fo$ack"
    for i in 1 2 3; do bench_stop "fo-sentinel$ack-$i"; done
    bench_stop "fo-replica$ack-1"
    bench_stop "fo-replica$ack-2"
}

# ack_cost — what `ack_replicas = 1` costs per append: 64 producers appending back to back
# through a gateway without and one with acknowledged writes, on one master with a replica,
# alternated twice.
ack_cost() {
    local master replica g0 g1 round mode port scen out="" rps p50 p99
    master=$(bench_pick_port) replica=$(bench_pick_port) g0=$(bench_pick_port) g1=$(bench_pick_port)
    redis_up ack-master "$master" --appendonly yes --appendfsync everysec
    redis_up ack-replica "$replica" --replicaof 127.0.0.1 "$master"
    replica_synced "$replica"
    gateway_up gw-ack0 "$g0" "$master"
    REDIS_STORE_TOML="urls = [\"redis://127.0.0.1:$master\"]
ack_replicas = 1
ack_timeout_ms = 500" gateway_up gw-ack1 "$g1" "$master"
    for round in 1 2; do
        for mode in 0 1; do
            port=$g0
            [[ $mode == 1 ]] && port=$g1
            scen=$(scenario_file "ack$mode-$round" 64 1 300 0)
            load_start "ack$mode-$round" "$scen" "http://127.0.0.1:$port"
            load_wait "ack$mode-$round" || return 0
            read -r rps p50 p99 < <(jq -r '[(.events.appended / .duration_secs | floor), .latency_ms.append.p50, .latency_ms.append.p99] | @tsv' "$BENCH_TMP/ack$mode-$round.json")
            out+="${out:+; }ack_replicas = $mode (round $round): $rps appends/s, p50 $p50 ms, p99 $p99 ms"
        done
    done
    row2 ack_cost "64 producers appending one event per call back to back, 300 each; one master and one replica on loopback" "$out"
    bench_stop gw-ack0
    bench_stop gw-ack1
    bench_stop ack-replica
    bench_stop ack-master
}

retention() {
    local redis gw scen
    redis=$(bench_pick_port) gw=$(bench_pick_port)
    redis_up redis-ret "$redis"
    STORE_EXTRA="events_maxlen = 20" gateway_up gw-ret "$gw" "$redis"
    # 20 sessions, one viewer each, offline for 8 s while ~500 events go by, in a log that
    # keeps 20. Back within the fan-out's linger (5 s) a viewer would be served from the
    # shared stream's replay ring, exactly; after it, it reads Redis and is told of the gap.
    scen=$(scenario_file retention 20 1 1000 10 1 8000 true)
    load_start retention "$scen" "http://127.0.0.1:$gw"
    load_wait retention || return 0
    local told gaps
    told=$(jq '.events.told_missing' "$BENCH_TMP/retention.json")
    gaps=$(jq '.events.gaps' "$BENCH_TMP/retention.json")
    row retention "$BENCH_TMP/retention.json" "events_maxlen = 20; viewers offline 8 s told of $told trimmed events in $gaps gap events (not lost)"
    bench_stop gw-ret
    bench_stop redis-ret
}

# upstream_faults — three faults of upstream peers, each through the gateway's upstream route.
upstream_faults() {
    local redis gw admin o1 o2 conf t0 code took
    redis=$(bench_pick_port) gw=$(bench_pick_port) admin=$(bench_pick_port)
    o1=$(bench_pick_port) o2=$(bench_pick_port)
    redis_up redis-uf "$redis"

    # 1. A peer killed mid-response: an endless event stream, its origin SIGKILLed under it.
    bench_up origin-stream "$o1" /healthz "" -- "$ORIGIN_BIN" --addr "127.0.0.1:$o1" \
        --threads 1 || bench_die "bench_origin did not start"
    conf=$(upstream_conf gw-uf1 "$gw" "$redis" "" "peers = [\"127.0.0.1:$o1\"]
read_timeout_ms = 0")
    bench_agentgate_up gw-uf1 "$gw" /healthz "$conf" || bench_die "gateway did not start"
    curl -sN -m 30 -o "$BENCH_TMP/uf1.body" "http://127.0.0.1:$gw/origin/stream" 2>/dev/null &
    local curl_pid=$!
    sleep 1
    kill -KILL "${BENCH_PID[origin-stream]}"
    unset "BENCH_PID[origin-stream]"
    t0=$(date +%s%N)
    code=0
    wait "$curl_pid" || code=$?
    took=$((($(date +%s%N) - t0) / 1000000))
    row2 upstream_killed_mid_response "an endless SSE response streamed through the gateway (no read timeout); its peer gets SIGKILL 1 s in" \
        "the client had $(grep -c '^data:' "$BENCH_TMP/uf1.body") events, then its response ended with an error (curl exit $code; 18 is a partial transfer) ${took} ms after the kill: no hang"
    bench_stop gw-uf1

    # 2. A peer that accepts and never answers, beside a good one.
    bench_up origin-silent "$o1" /healthz "" -- "$ORIGIN_BIN" --addr "127.0.0.1:$o1" \
        --threads 1 --delay-ms 3600000 || bench_die "bench_origin did not start"
    bench_up origin-good "$o2" /healthz "" -- "$ORIGIN_BIN" --addr "127.0.0.1:$o2" \
        --threads 1 || bench_die "bench_origin did not start"
    conf=$(upstream_conf gw-uf2 "$gw" "$redis" "" "peers = [\"127.0.0.1:$o1\", \"127.0.0.1:$o2\"]
read_timeout_ms = 500")
    bench_agentgate_up gw-uf2 "$gw" /healthz "$conf" || bench_die "gateway did not start"
    local ok=0 timeouts=0 other=0 c
    for ((i = 0; i < 20; i++)); do
        c=$(curl -s -o /dev/null -m 10 -w '%{http_code}' "http://127.0.0.1:$gw/origin/x" || true)
        case $c in 200) ok=$((ok + 1)) ;; 504) timeouts=$((timeouts + 1)) ;; *) other=$((other + 1)) ;; esac
    done
    row2 upstream_silent_peer "20 GETs over a silent peer and a good one (round robin), read_timeout_ms = 500" \
        "$ok answered 200, $timeouts answered 504 after the read timeout, $other other; none hung"
    bench_stop gw-uf2
    bench_stop origin-silent

    # 3. A peer failing health checks under load.
    bench_up origin-doomed "$o1" /healthz "" -- "$ORIGIN_BIN" --addr "127.0.0.1:$o1" \
        --threads 1 || bench_die "bench_origin did not start"
    conf=$(upstream_conf gw-uf3 "$gw" "$redis" "$admin" "peers = [\"127.0.0.1:$o1\", \"127.0.0.1:$o2\"]
[upstreams.origin.health_check]
path = \"/healthz\"
interval_ms = 200
timeout_ms = 200
unhealthy_threshold = 2
healthy_threshold = 1")
    bench_agentgate_up gw-uf3 "$gw" /healthz "$conf" || bench_die "gateway did not start"
    timeout 30 wrk -t 1 -c 16 -d 8s --latency "http://127.0.0.1:$gw/origin/x" >"$BENCH_TMP/uf3.wrk" 2>&1 &
    local w=$! healthy ejected=""
    sleep 3
    kill -KILL "${BENCH_PID[origin-doomed]}"
    unset "BENCH_PID[origin-doomed]"
    t0=$(date +%s%N)
    for ((i = 0; i < 100; i++)); do
        healthy=$(curl -s "http://127.0.0.1:$admin/metrics" | awk '/^agentgate_upstream_healthy_peers\{/ { print $2 }')
        if [[ $healthy == 1 ]]; then ejected=$((($(date +%s%N) - t0) / 1000000)); break; fi
        sleep 0.05
    done
    wait "$w" || true
    local u
    IFS=$'\t' read -r -a u < <(wrk_stats "$BENCH_TMP/uf3.wrk")
    row2 upstream_health_ejection "wrk, 16 connections, 2 peers; one SIGKILLed at 3 s; checks every 200 ms, unhealthy after 2" \
        "ejected after ${ejected:-more than 5000} ms (2 failed checks 200 ms apart, on the gateway's one thread busy with wrk); ${u[0]} requests, ${u[1]} non-2xx, ${u[2]} socket errors"
    bench_stop gw-uf3
    bench_stop origin-good
    bench_stop redis-uf
}

declare -A RES=()
for s in $SCENARIOS; do
    case $s in
    node_kill) node_kill ;;
    redis_restart_everysec) redis_restart everysec ;;
    redis_restart_always) redis_restart always ;;
    stalled_readers) stalled_readers ;;
    upgrade) upgrade ;;
    overload) overload ;;
    failover_ack0) failover 0 ;;
    failover_ack1) failover 1 ;;
    retention) retention ;;
    upstream) upstream_faults ;;
    ack_cost) ack_cost ;;
    *) bench_die "unknown scenario '$s'" ;;
    esac
done

{
    echo "# agentgate fault suite, $(date -u +%Y-%m-%dT%H:%MZ); host: $(uname -srm), $(nproc) CPUs"
    echo
    printf '| %s |\n' "scenario | sessions | streams | written | acked | lost | lost on replay | dup | out of order | agent-visible errors | reconnects | longest wait (ms) | recovered | notes"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|---|"
    while IFS=$'\t' read -r -a f; do
        printf '| %s ' "${f[@]}"
        echo "|"
    done <"$ROWS"
    if [[ -s $ROWS2 ]]; then
        echo
        echo "| scenario | load | outcome |"
        echo "|---|---|---|"
        while IFS=$'\t' read -r -a f; do
            printf '| %s ' "${f[@]}"
            echo "|"
        done <"$ROWS2"
    fi
} | tee "$BENCH_TMP/table.md"
cp "$BENCH_TMP/table.md" "${FAULTS_RESULTS:-$BENCH_REPO/bench/faults-latest.md}"
