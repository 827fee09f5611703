#!/usr/bin/env bash
# Fault suite: runs each fault scenario against real processes on loopback and prints one
# table — sessions, streams, events written and acknowledged, lost (acknowledged, never
# delivered to a live viewer), lost on replay (acknowledged, no longer in the log when one more
# reader replays it afterwards: the store's durability), duplicated, out of order, what agents
# saw fail (by call and status), the longest any viewer waited for its next event across the
# fault, and whether everything recovered by itself. See bench/README.md ("Faults").
#
# The load is `agentgate loadtest` with `session.resume = true`: every viewer reconnects the way
# a browser's EventSource does (`retry:`, `Last-Event-ID`), agents go on after a failed call,
# and every viewer checks it got every acknowledged event exactly once, in order.
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
#   upgrade                 `serve --upgrade` + SIGQUIT while viewers follow sessions and wrk
#                           loads an upstream route through the same gateway
#
# Bounded: each loadtest by its scenario's max_duration_secs and LOADTEST_TIMEOUT; every
# process it started is stopped by PID on exit (lib.sh).
set -euo pipefail

BENCH_NAME=faults
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SCENARIOS=${SCENARIOS:-"node_kill redis_restart_everysec redis_restart_always stalled_readers upgrade"}
STALL_SECS=${STALL_SECS:-60}        # how long stalled viewers stop reading
STALLED=${STALLED:-1000}            # sessions in stalled_readers (each: 1 reader + 1 stalled)
LOADTEST_TIMEOUT=${LOADTEST_TIMEOUT:-400}
API_KEY=bench-api-key-0123456789
for n in "$STALL_SECS" "$STALLED" "$LOADTEST_TIMEOUT"; do
    [[ $n =~ ^[0-9]+$ ]] || bench_die "expected a whole number, got '$n'"
done

bench_require redis-server:redis-server redis-cli:redis-tools nginx:nginx jq:jq curl:curl \
    wrk:wrk timeout:coreutils
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
bench_init
bench_build --bin agentgate --example bench_origin
AGENTGATE_BIN=$BENCH_BIN_DIR/agentgate
ORIGIN_BIN=$BENCH_BIN_DIR/examples/bench_origin
NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# ---- processes ------------------------------------------------------------------------------

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

# gateway_conf NAME PORT REDIS_PORT [EXTRA_TOML] — a gateway config on PORT; prints its path.
gateway_conf() {
    local file=$BENCH_TMP/$1.toml
    cat >"$file" <<CONF
[server]
listen = ["127.0.0.1:$2"]
threads = 1
shutdown_grace_secs = 5

[auth]
api_keys = ["$API_KEY"]
stream_token_secret = "faults-secret-faults-secret-faults-secret"

[store]
kind = "redis"

[store.redis]
urls = ["redis://127.0.0.1:$3"]
timeout_ms = 1000

[store.quotas]
max_active_sessions_per_key = 1_000_000

[agent]
dispatch = "none"

[server.limits]
max_connections = 20000
max_connections_per_ip = 20000
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

# scenario_file NAME SESSIONS VIEWERS EVENTS THINK_MS [STALLED [STALL_MS]] — a resume scenario:
# all sessions in flight at once, each appending EVENTS one per call every THINK_MS.
scenario_file() {
    local file=$BENCH_TMP/$1.scenario.toml
    cat >"$file" <<SCEN
[run]
sessions = $2
concurrency = $2
max_duration_secs = 300
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
resume = true
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
    sleep 1
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

declare -A RES=()
for s in $SCENARIOS; do
    case $s in
    node_kill) node_kill ;;
    redis_restart_everysec) redis_restart everysec ;;
    redis_restart_always) redis_restart always ;;
    stalled_readers) stalled_readers ;;
    upgrade) upgrade ;;
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
} | tee "$BENCH_TMP/table.md"
cp "$BENCH_TMP/table.md" "${FAULTS_RESULTS:-$BENCH_REPO/bench/faults-latest.md}"
