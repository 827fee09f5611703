#!/usr/bin/env bash
# A/B benchmark: the naive baseline (every [features] switch off) against the optimized
# gateway (all on), in one run, against one private redis-server (flushed between builds).
# For each build, on a gateway with store.kind = "redis":
#
#   1. lifecycle: `CONFIG RESETSTAT`, the fixed scenario bench/scenarios/ab-lifecycle.toml,
#      then Redis `INFO commandstats` and the gateway's own counters (admin /metrics):
#      Redis commands executed, commands sent and round trips per session lifecycle;
#   2. 1000 concurrent sessions: bench/scenarios/1000-sessions.toml through
#      `agentgate loadtest --json --plot` (init and complete p99, errors; charts);
#   3. capacity ramp: RAMP_STEPS concurrent sessions (each step the 1000-sessions plan at
#      that size), until the p99 of init or complete exceeds BUDGET_MS or an error appears;
#      the last step that held is the capacity.
#
# Then one table: metric | off | on | on/off | seed criterion | our target | met?, appended
# to $RESULTS. See bench/README.md ("A/B: naive baseline vs optimized").
#
#   bench/ab.sh                                           # full run, ~5 min on 2 cores
#   LIFECYCLE_SESSIONS=50 RAMP_STEPS="100 400" bench/ab.sh  # quick
#   SKIP_BUILD=1 bench/ab.sh                              # reuse the release binary
set -euo pipefail

BENCH_NAME=ab
export LC_ALL=C # sort and join must agree on the order
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BUILDS=${BUILDS:-"off on"}               # builds to measure, in this order
LIFECYCLE_SCENARIO=${LIFECYCLE_SCENARIO:-$BENCH_REPO/bench/scenarios/ab-lifecycle.toml}
LIFECYCLE_SESSIONS=${LIFECYCLE_SESSIONS:-}  # overrides run.sessions of the lifecycle scenario
LOAD_SCENARIO=${LOAD_SCENARIO:-$BENCH_REPO/bench/scenarios/1000-sessions.toml}
RAMP_STEPS=${RAMP_STEPS:-"250 500 750 1000 1500 2000 3000 4000"}
BUDGET_MS=${BUDGET_MS:-500}               # p99 of init and of complete, per ramp step
CHARTS_DIR=${CHARTS_DIR:-$BENCH_REPO/bench/charts/ab}
GATEWAY_THREADS=${GATEWAY_THREADS:-0}     # [server] threads (0 = one per core)
# Round trip added between the gateway and Redis (ms, decimals allowed; 0 = plain loopback):
# examples/delay_proxy.rs holds every chunk RTT/2 in each direction, so a round trip costs
# what it does to a Redis on another host. Our own redis-cli probes go straight to Redis.
REDIS_RTT_MS=${REDIS_RTT_MS:-1}
LOADTEST_TIMEOUT=${LOADTEST_TIMEOUT:-300} # s one loadtest may take (scenarios bound themselves)
API_KEY=bench-api-key-0123456789

# The seed's criteria and our targets, as on/off ratios (errors: counts).
SEED_OPS=0.2 TARGET_RT=0.1 SEED_P99=0.5 TARGET_P99=0.3 SEED_CAP=3 TARGET_CAP=5

for n in $RAMP_STEPS $BUDGET_MS $GATEWAY_THREADS $LOADTEST_TIMEOUT ${LIFECYCLE_SESSIONS:-1}; do
    [[ $n =~ ^[0-9]+$ ]] || bench_die "expected a whole number, got '$n'"
done
for b in $BUILDS; do
    [[ $b == on || $b == off ]] || bench_die "BUILDS takes 'off' and/or 'on', got '$b'"
done

bench_require redis-server:redis-server redis-cli:redis-tools timeout:coreutils curl:curl jq:jq
# Each session holds two connections on each side (agent calls and its stream).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
max_step=0
for n in $RAMP_STEPS; do
    if ((n > max_step)); then max_step=$n; fi
done
if [[ $(ulimit -n) != unlimited ]] && (($(ulimit -n) < 3 * max_step + 1000)); then
    bench_log "WARNING: open-file limit $(ulimit -n) is low for a ramp step of $max_step sessions"
fi

bench_init
bench_build --bin agentgate --example delay_proxy
AGENTGATE_BIN=${AGENTGATE_BIN:-$BENCH_BIN_DIR/agentgate}

declare -A RES=() # "<off|on>.<key>" -> value

# ---- Redis ----------------------------------------------------------------------------------

REDIS_PORT=$(bench_pick_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --notify-keyspace-events Ex --maxclients 20000 --logfile "$BENCH_TMP/redis.log" &
BENCH_PID[redis]=$!
deadline=$((SECONDS + START_TIMEOUT))
until [[ $(timeout 2 redis-cli -p "$REDIS_PORT" PING 2>/dev/null) == PONG ]]; do
    kill -0 "${BENCH_PID[redis]}" 2>/dev/null || bench_die "redis-server exited: $(tail -n 5 "$BENCH_TMP/redis.log")"
    ((SECONDS < deadline)) || bench_die "redis-server not answering on port $REDIS_PORT"
    sleep 0.1
done
bench_log "redis-server up on port $REDIS_PORT (pid ${BENCH_PID[redis]})"

rcli() { timeout 10 redis-cli -p "$REDIS_PORT" "$@"; }

# The gateway's way to Redis: straight, or through the delay line.
GATEWAY_REDIS_PORT=$REDIS_PORT
one_way_us=$(awk -v ms="$REDIS_RTT_MS" 'BEGIN { printf "%d", ms * 500 }')
if ((one_way_us > 0)); then
    "$BENCH_BIN_DIR/examples/delay_proxy" 127.0.0.1:0 "127.0.0.1:$REDIS_PORT" "$one_way_us" \
        >"$BENCH_TMP/delay_proxy.out" 2>&1 &
    BENCH_PID[delay_proxy]=$!
    deadline=$((SECONDS + START_TIMEOUT))
    until grep -q '^listening on' "$BENCH_TMP/delay_proxy.out" 2>/dev/null; do
        kill -0 "${BENCH_PID[delay_proxy]}" 2>/dev/null || bench_die "delay_proxy exited: $(cat "$BENCH_TMP/delay_proxy.out")"
        ((SECONDS < deadline)) || bench_die "delay_proxy did not start"
        sleep 0.1
    done
    GATEWAY_REDIS_PORT=$(sed -n 's/^listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$BENCH_TMP/delay_proxy.out")
    bench_log "gateway reaches Redis through delay_proxy on port $GATEWAY_REDIS_PORT (+${REDIS_RTT_MS} ms per round trip)"
fi

# Prints "NAME CALLS" per command Redis executed since the last CONFIG RESETSTAT (commands
# run by scripts included), leaving out our own probes and the notifier's keep-alive.
redis_commandstats() {
    rcli INFO commandstats | tr -d '\r' | awk -F'[_:=,]' '
        /^cmdstat_/ {
            name = $2
            if (name ~ /^(info|config|ping|client|hello|select|command|flushall|psubscribe)([|]|$)/) next
            print name, $4
        }'
}

# ---- the gateway ----------------------------------------------------------------------------

write_conf() {
    local build=$1 port=$2 admin=$3 file=$BENCH_TMP/agentgate-$1.toml flag
    flag=$([[ $build == on ]] && echo true || echo false)
    cat >"$file" <<CONF
[server]
listen = ["127.0.0.1:$port"]
admin_listen = "127.0.0.1:$admin"
threads = $GATEWAY_THREADS

[auth]
api_keys = ["$API_KEY"]
stream_token_secret = "bench-secret-bench-secret-bench-secret"

[store]
kind = "redis"

[store.redis]
urls = ["redis://127.0.0.1:$GATEWAY_REDIS_PORT"]

# Every load-test session runs under one API key: lift its running-session quota (default
# 1000) past the load's peak.
[store.quotas]
max_active_sessions_per_key = 1_000_000

[agent]
dispatch = "none"

[features]
existence_cache = $flag
sse_fanout = $flag
parallel_tools = $flag
pipelining = $flag
hash_state = $flag

[tools.sha256]
kind = "sha256"
CONF
    echo "$file"
}

# gateway_counter ADMIN_PORT SERIES — one value of the gateway's /metrics (0 if absent).
gateway_counter() {
    timeout 10 curl -fsS "http://127.0.0.1:$1/metrics" |
        awk -v s="$2" 'index($0, s " ") == 1 { print $2; found = 1 } END { if (!found) print 0 }' ||
        true
}

# gateway_by_command ADMIN_PORT — "NAME COUNT" per command the gateway sent.
gateway_by_command() {
    timeout 10 curl -fsS "http://127.0.0.1:$1/metrics" |
        sed -n 's/^agentgate_store_commands_by_name_total{command="\([A-Za-z_]*\)"} \([0-9.e+]*\)$/\1 \2/p' ||
        true
}

# loadtest NAME SCENARIO PORT [--plot DIR] — runs one scenario; the report lands in
# $BENCH_TMP/NAME.json. Exit status 3 (a threshold breached) is a result, not a failure.
loadtest() {
    local name=$1 scenario=$2 port=$3 status=0
    shift 3
    timeout --kill-after=10 "$LOADTEST_TIMEOUT" "$AGENTGATE_BIN" loadtest \
        --target "http://127.0.0.1:$port" --api-key "$API_KEY" --scenario "$scenario" \
        --json "$BENCH_TMP/$name.json" --quiet "$@" >"$BENCH_TMP/$name.log" 2>&1 || status=$?
    if ((status != 0 && status != 3)) || [[ ! -s $BENCH_TMP/$name.json ]]; then
        bench_log "ERROR: loadtest $name exited $status:"
        tail -n 15 "$BENCH_TMP/$name.log" | sed 's/^/    /' >&2
        return 1
    fi
}

# report_get NAME JQ — a value of NAME's JSON report.
report_get() { jq -r "$2" "$BENCH_TMP/$1.json"; }
report_errors() { report_get "$1" '[.errors[]] | add // 0'; }

# scenario_sized N — the load scenario's session plan, N sessions all in flight at once:
# arrivals ramp from N/5 to 2N per second over one second (1000-sessions.toml at N = 1000).
scenario_sized() {
    local n=$1 file=$BENCH_TMP/ramp-$1.toml
    cat >"$file" <<SCEN
[run]
sessions = $n
concurrency = $n
max_duration_secs = 120
request_timeout_ms = 20_000

[arrival]
ramp_from_per_sec = $((n / 5)).0
ramp_to_per_sec = $((n * 2)).0
ramp_secs = 1.0

$(sed -n '/^\[session\]/,/^\[/p' "$LOAD_SCENARIO" | sed '$d')

[thresholds]
max_error_rate = 0.0
p99_init_ms = $BUDGET_MS
p99_complete_ms = $BUDGET_MS
SCEN
    echo "$file"
}

# ---- one build ------------------------------------------------------------------------------

measure_build() {
    local b=$1 port admin conf rt0 cmd0 rt1 cmd1 sessions n held executed life warm
    rcli FLUSHALL >/dev/null
    rcli SCRIPT FLUSH >/dev/null
    port=$(bench_pick_port)
    admin=$(bench_pick_port)
    conf=$(write_conf "$b" "$port" "$admin")
    if ! bench_agentgate_up "gw-$b" "$port" /healthz "$conf"; then
        RES[$b.status]="FAIL: gateway did not come up"
        return 0
    fi
    RES[$b.status]=ok

    # Warm-up (connections, script cache), not counted.
    warm=$BENCH_TMP/warmup.toml
    sed -e 's/^sessions = .*/sessions = 5/' "$LIFECYCLE_SCENARIO" >"$warm"
    loadtest "warmup-$b" "$warm" "$port" || true

    # 1. Redis traffic per lifecycle.
    life=$BENCH_TMP/lifecycle.toml
    if [[ -n $LIFECYCLE_SESSIONS ]]; then
        sed -e "s/^sessions = .*/sessions = $LIFECYCLE_SESSIONS/" "$LIFECYCLE_SCENARIO" >"$life"
    else
        cp "$LIFECYCLE_SCENARIO" "$life"
    fi
    rcli CONFIG RESETSTAT >/dev/null
    rt0=$(gateway_counter "$admin" agentgate_store_round_trips_total)
    cmd0=$(gateway_counter "$admin" agentgate_store_commands_total)
    gateway_by_command "$admin" >"$BENCH_TMP/by-command-$b.before"
    bench_log "$b: lifecycle scenario"
    if loadtest "lifecycle-$b" "$life" "$port"; then
        rt1=$(gateway_counter "$admin" agentgate_store_round_trips_total)
        cmd1=$(gateway_counter "$admin" agentgate_store_commands_total)
        gateway_by_command "$admin" >"$BENCH_TMP/by-command-$b.after"
        redis_commandstats >"$BENCH_TMP/commandstats-$b"
        sessions=$(report_get "lifecycle-$b" '.sessions.started')
        executed=$(awk '{ s += $2 } END { print s + 0 }' "$BENCH_TMP/commandstats-$b")
        RES[$b.life_errors]=$(report_errors "lifecycle-$b")
        RES[$b.round_trips]=$(awk -v a="$rt0" -v b="$rt1" -v n="$sessions" 'BEGIN { printf "%.1f", (b - a) / n }')
        RES[$b.commands]=$(awk -v a="$cmd0" -v b="$cmd1" -v n="$sessions" 'BEGIN { printf "%.1f", (b - a) / n }')
        RES[$b.executed]=$(awk -v e="$executed" -v n="$sessions" 'BEGIN { printf "%.1f", e / n }')
        # Per-command detail: sent by the gateway, executed by Redis, per lifecycle.
        awk -v n="$sessions" '
            FILENAME == ARGV[1] { before[$1] = $2; next }
            FILENAME == ARGV[2] { sent[$1] = $2 - before[$1]; next }
            { run[toupper($1)] = $2 }
            END {
                for (c in sent) if (sent[c] > 0) names[c] = 1
                for (c in run) names[c] = 1
                for (c in names) printf "%s %.2f %.2f\n", c, sent[c] / n, run[c] / n
            }' "$BENCH_TMP/by-command-$b.before" "$BENCH_TMP/by-command-$b.after" \
            "$BENCH_TMP/commandstats-$b" | sort >"$BENCH_TMP/per-command-$b"
        # Writes: every round trip but the stream side's reads (one command each).
        RES[$b.write_round_trips]=$(awk -v rt="${RES[$b.round_trips]}" '
            $1 ~ /^(XRANGE|EXISTS|HGETALL)$/ { reads += $2 }
            END { printf "%.1f", rt - reads }' "$BENCH_TMP/per-command-$b")
        # Medians at this light load, where the machine is not saturated.
        RES[$b.append_p50]=$(report_get "lifecycle-$b" '.latency_ms.append.p50')
        RES[$b.tool_p50]=$(report_get "lifecycle-$b" '.latency_ms.tool_batch.p50')
        RES[$b.complete_p50]=$(report_get "lifecycle-$b" '.latency_ms.complete.p50')
    else
        RES[$b.life_errors]=failed
    fi

    # 2. 1000 concurrent sessions.
    rcli FLUSHALL >/dev/null
    bench_log "$b: $(basename "$LOAD_SCENARIO")"
    rm -rf "${CHARTS_DIR:?}/$b"
    mkdir -p "$CHARTS_DIR/$b"
    if loadtest "load-$b" "$LOAD_SCENARIO" "$port" --plot "$CHARTS_DIR/$b"; then
        RES[$b.init_p99]=$(report_get "load-$b" '.latency_ms.init_ttfb.p99')
        RES[$b.complete_p99]=$(report_get "load-$b" '.latency_ms.complete.p99')
        RES[$b.peak]=$(report_get "load-$b" '.sessions.peak_concurrent')
        RES[$b.load_errors]=$(report_errors "load-$b")
        RES[$b.load_error_kinds]=$(report_get "load-$b" '[.errors | to_entries[] | "\(.key)=\(.value)"] | join(",") | if . == "" then "none" else . end')
    else
        RES[$b.load_errors]=failed
    fi

    # 3. Capacity ramp.
    held=0
    RES[$b.ramp]=""
    for n in $RAMP_STEPS; do
        rcli FLUSHALL >/dev/null
        if ! loadtest "ramp-$b-$n" "$(scenario_sized "$n")" "$port"; then
            RES[$b.ramp]+=" $n:failed"
            break
        fi
        local i99 c99 errs peak
        i99=$(report_get "ramp-$b-$n" '.latency_ms.init_ttfb.p99')
        c99=$(report_get "ramp-$b-$n" '.latency_ms.complete.p99')
        errs=$(report_errors "ramp-$b-$n")
        peak=$(report_get "ramp-$b-$n" '.sessions.peak_concurrent')
        RES[$b.ramp]+=" $n:init=${i99},complete=${c99},errors=${errs},peak=${peak}"
        bench_log "$b: ramp $n sessions (peak $peak at once): init p99 $i99 ms, complete p99 $c99 ms, errors $errs"
        if [[ $(report_get "ramp-$b-$n" '.passed') != true ]]; then break; fi
        held=$n
    done
    RES[$b.capacity]=$held
    RES[$b.capacity_top]=$([[ $held == "$max_step" ]] && echo 1 || echo 0)
    bench_down "gw-$b"
}

for b in $BUILDS; do measure_build "$b"; done

# ---- report ---------------------------------------------------------------------------------

get() { echo "${RES[$1.$2]:-n/a}"; }
num() { [[ $1 =~ ^[0-9]+([.][0-9]+)?$ ]]; }
ratio() { # ratio KEY — on/off
    local a b
    a=$(get on "$1") b=$(get off "$1")
    if num "$a" && num "$b"; then awk -v a="$a" -v b="$b" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "-" }'; else echo "-"; fi
}
# at_most VALUE LIMIT / at_least VALUE LIMIT — yes, no or n/a.
at_most() { if num "$1"; then awk -v v="$1" -v l="$2" 'BEGIN { print (v <= l ? "yes" : "no") }'; else echo n/a; fi; }
at_least() { if num "$1"; then awk -v v="$1" -v l="$2" 'BEGIN { print (v >= l ? "yes" : "no") }'; else echo n/a; fi; }

errors_of() { # total errors of a build over the lifecycle and the 1000-session runs
    local l m
    l=$(get "$1" life_errors) m=$(get "$1" load_errors)
    if num "$l" && num "$m"; then echo $((l + m)); else echo n/a; fi
}

cap_ratio=$(ratio capacity)
cap_note=""
if [[ $(get on capacity_top) == 1 ]]; then cap_note="on held the top step: its capacity is at least that, add RAMP_STEPS"; fi
if [[ $(get off capacity_top) == 1 ]]; then cap_ratio="-"; cap_note="both held the top step: add RAMP_STEPS"; fi
if [[ $(get off capacity) == 0 ]]; then cap_ratio="-"; cap_note="off held no step: start RAMP_STEPS lower"; fi
err_off=$(errors_of off) err_on=$(errors_of on)
err_seed=n/a err_target=n/a
if num "$err_off" && num "$err_on"; then
    err_seed=$( ((err_on <= err_off)) && echo yes || echo no)
    err_target=$( ((err_on == 0)) && echo yes || echo no)
fi

{
    echo
    echo "== ab: all [features] off (naive) vs all on (optimized), store redis =="
    echo "# host: $(uname -srm), $(nproc) CPUs; $(redis-server --version | awk '{print $3}'); gateway threads $GATEWAY_THREADS; Redis round trip +${REDIS_RTT_MS} ms (delay_proxy)"
    echo "# lifecycle: $(basename "$LIFECYCLE_SCENARIO")${LIFECYCLE_SESSIONS:+ (sessions = $LIFECYCLE_SESSIONS)}; load: $(basename "$LOAD_SCENARIO"); ramp: $RAMP_STEPS; budget: p99 init and complete <= ${BUDGET_MS} ms, no error"
    fmt='%-44s %10s %10s %8s %14s %10s %12s\n'
    # shellcheck disable=SC2059 # the format is a constant
    printf "$fmt" metric off on on/off "seed" "target" "met? (s/t)"
    row() { printf "$fmt" "$@"; }
    r=$(ratio round_trips)
    row "Redis round trips / lifecycle (gateway)" "$(get off round_trips)" "$(get on round_trips)" "$r" "<= $SEED_OPS" "<= $TARGET_RT" "$(at_most "$r" $SEED_OPS)/$(at_most "$r" $TARGET_RT)"
    r=$(ratio write_round_trips)
    row "  of which writes (not XRANGE/EXISTS)" "$(get off write_round_trips)" "$(get on write_round_trips)" "$r" "(info)" "<= $TARGET_RT" "-/$(at_most "$r" $TARGET_RT)"
    r=$(ratio commands)
    row "Redis commands sent / lifecycle (gateway)" "$(get off commands)" "$(get on commands)" "$r" "<= $SEED_OPS" "-" "$(at_most "$r" $SEED_OPS)/-"
    r=$(ratio executed)
    row "Redis commands run / lifecycle (cmdstats)" "$(get off executed)" "$(get on executed)" "$r" "(info)" "-" "-"
    row "append p50 @ lifecycle (ms)" "$(get off append_p50)" "$(get on append_p50)" "$(ratio append_p50)" "(info)" "-" "-"
    row "tool batch p50 @ lifecycle (ms)" "$(get off tool_p50)" "$(get on tool_p50)" "$(ratio tool_p50)" "(info)" "-" "-"
    row "complete p50 @ lifecycle (ms)" "$(get off complete_p50)" "$(get on complete_p50)" "$(ratio complete_p50)" "(info)" "-" "-"
    r=$(ratio init_p99)
    row "init p99 @ load (ms)" "$(get off init_p99)" "$(get on init_p99)" "$r" "<= $SEED_P99" "<= $TARGET_P99" "$(at_most "$r" $SEED_P99)/$(at_most "$r" $TARGET_P99)"
    r=$(ratio complete_p99)
    row "complete p99 @ load (ms)" "$(get off complete_p99)" "$(get on complete_p99)" "$r" "<= $SEED_P99" "<= $TARGET_P99" "$(at_most "$r" $SEED_P99)/$(at_most "$r" $TARGET_P99)"
    row "  peak concurrent sessions @ load" "$(get off peak)" "$(get on peak)" "" "" "" ""
    row "capacity: sessions within budget" "$(get off capacity)" "$(get on capacity)" "$cap_ratio" ">= $SEED_CAP" ">= $TARGET_CAP" "$(at_least "$cap_ratio" $SEED_CAP)/$(at_least "$cap_ratio" $TARGET_CAP)"
    row "errors (lifecycle + load)" "$err_off" "$err_on" "" "on <= off" "on = 0" "$err_seed/$err_target"
    if [[ -n $cap_note ]]; then echo "capacity: $cap_note"; fi
    echo "errors by kind @ load: off: $(get off load_error_kinds); on: $(get on load_error_kinds)"
    echo "ramp off:$(get off ramp)"
    echo "ramp on:$(get on ramp)"
    echo "per lifecycle, by command: sent by the gateway / run by Redis (scripts' commands included)"
    printf '  %-12s %18s %18s\n' command off on
    join -a1 -a2 -e- -o 0,1.2,1.3,2.2,2.3 \
        <(sort "$BENCH_TMP/per-command-off" 2>/dev/null || true) \
        <(sort "$BENCH_TMP/per-command-on" 2>/dev/null || true) |
        awk '{ printf "  %-12s %8s / %-8s %8s / %s\n", $1, $2, $3, $4, $5 }'
} | tee -a "$BENCH_TMP/summary.txt"

mkdir -p "$(dirname "$RESULTS")"
{
    echo
    echo "######## $BENCH_NAME $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    cat "$BENCH_TMP/summary.txt"
} >>"$RESULTS"
bench_log "summary appended to $RESULTS; charts in $CHARTS_DIR/{off,on}"
