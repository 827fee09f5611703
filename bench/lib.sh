# shellcheck shell=bash
# Shared code for the agentgate benchmarks (sourced by proxy.sh and agent.sh; not run alone).
#
# What is here: tool installation, building, free-port picking, starting/stopping the
# processes under test (and killing them on exit), running wrk, parsing its --latency
# output, and printing the per-round tables, medians and ratios.
#
# A script using it sets BENCH_NAME, calls bench_init, registers targets with bench_up /
# bench_down, calls bench_run_rounds N for each worker count and bench_summary N afterwards,
# and finally bench_write_results.

# ---- knobs shared by every script (see bench/README.md) -------------------------------------
WRK_THREADS=${WRK_THREADS:-2}
WRK_CONNECTIONS=${WRK_CONNECTIONS:-64}
DURATION=${DURATION:-10}          # seconds per measured run
WARMUP=${WARMUP:-2}               # seconds of warm-up before each measured run (0 = none)
ROUNDS=${ROUNDS:-3}
WORKERS=${WORKERS:-"1 2"}         # worker/thread counts to compare
START_TIMEOUT=${START_TIMEOUT:-30} # seconds a process may take to accept connections
WRK_CPUS=${WRK_CPUS:-}            # optional taskset CPU list for wrk
GATEWAY_CPUS=${GATEWAY_CPUS:-}    # optional taskset CPU list for the peer under test
ORIGIN_CPUS=${ORIGIN_CPUS:-}      # optional taskset CPU list for bench_origin
AGENTGATE_LOG=${AGENTGATE_LOG:-warn} # RUST_LOG for agentgate (access logs would skew results)

BENCH_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS=${RESULTS:-$BENCH_REPO/bench/results-latest.txt}

declare -A BENCH_PID=()   # target name -> pid of the process we started
declare -A BENCH_URL=()   # target name -> URL to load, set once the target answered 200
declare -A BENCH_FAIL=()  # target name -> why it is not up
declare -A BENCH_STOP_SIGNAL=() # target name -> first signal bench_stop sends (default TERM)
BENCH_PORTS=" "           # ports handed out so far, so two services never get the same one
BENCH_TMP=""
BENCH_WRK_PID=""          # the wrk run in progress, if any

bench_log() { printf '[%s] %s\n' "$BENCH_NAME" "$*" >&2; }
bench_die() { bench_log "ERROR: $*"; exit 1; }

# ---- setup and teardown ---------------------------------------------------------------------

# Makes the temp dir and installs the cleanup trap. Everything started later is killed on
# exit, on Ctrl-C and on TERM (background children of a script ignore SIGINT, so the trap
# must do it).
bench_init() {
    local n
    for n in "$WRK_THREADS" "$WRK_CONNECTIONS" "$DURATION" "$WARMUP" "$ROUNDS" "$START_TIMEOUT"; do
        [[ $n =~ ^[0-9]+$ ]] || bench_die "expected a whole number, got '$n' (DURATION and WARMUP are seconds)"
    done
    BENCH_TMP=$(mktemp -d "${TMPDIR:-/tmp}/agentgate-bench.XXXXXX")
    # nginx workers may run as another user and must read their config and temp dirs.
    chmod 755 "$BENCH_TMP"
    : >"$BENCH_TMP/rows.tsv"
    : >"$BENCH_TMP/summary.txt"
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

bench_cleanup() {
    local status=$? name
    trap - EXIT INT TERM
    if [[ -n $BENCH_WRK_PID ]]; then
        kill -TERM "$BENCH_WRK_PID" 2>/dev/null || true   # timeout passes it on to wrk
        wait "$BENCH_WRK_PID" 2>/dev/null || true
    fi
    for name in "${!BENCH_PID[@]}"; do
        bench_stop "$name"
    done
    if [[ -n $BENCH_TMP && -d $BENCH_TMP ]]; then
        if [[ ${KEEP_TMP:-0} == 1 ]]; then
            bench_log "logs and configs kept in $BENCH_TMP"
        else
            rm -rf "$BENCH_TMP"
        fi
    fi
    exit "$status"
}

# bench_require CMD:PACKAGE... — installs missing Debian packages when root, else prints the
# install line and exits 1.
bench_require() {
    local spec cmd pkg missing=()
    for spec in "$@"; do
        cmd=${spec%%:*} pkg=${spec#*:}
        command -v "$cmd" >/dev/null 2>&1 || [[ -x /usr/sbin/$cmd ]] || missing+=("$pkg")
    done
    ((${#missing[@]} == 0)) && return 0
    if ((EUID == 0)) && command -v apt-get >/dev/null 2>&1; then
        bench_log "installing: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        bench_log "missing: ${missing[*]}. Install with:"
        echo "  sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
}

# bench_build CARGO_ARGS... — release build in the repo; sets BENCH_BIN_DIR.
bench_build() {
    local target_dir=${CARGO_TARGET_DIR:-$BENCH_REPO/target}
    BENCH_BIN_DIR=$target_dir/release
    if [[ ${SKIP_BUILD:-0} == 1 ]]; then
        bench_log "SKIP_BUILD=1: using binaries in $BENCH_BIN_DIR"
        return 0
    fi
    bench_log "building: cargo build --release $*"
    (cd "$BENCH_REPO" && cargo build --release "$@") ||
        bench_die "cargo build failed (TARGETS without agentgate builds only bench_origin)"
}

# ---- ports and processes --------------------------------------------------------------------

bench_port_is_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Prints a free loopback port: asks the kernel via python3 when there is one, else probes
# random high ports. Never hands out the same port twice in one run.
bench_pick_port() {
    local port tries
    for ((tries = 0; tries < 50; tries++)); do
        if command -v python3 >/dev/null 2>&1; then
            port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        else
            port=$((20000 + RANDOM % 40000))
            bench_port_is_free "$port" || continue
        fi
        if [[ $BENCH_PORTS != *" $port "* ]]; then
            BENCH_PORTS+="$port "
            echo "$port"
            return 0
        fi
    done
    bench_die "could not find a free port"
}

# bench_http_status PORT PATH — prints the status code of one GET (000 if none).
bench_http_status() {
    # shellcheck disable=SC2016 # $0/$1 are expanded by the inner bash
    timeout 5 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$0" || exit 1
        printf "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" "$1" >&3
        read -r _ code _ <&3 && echo "$code"' "$1" "$2" 2>/dev/null || echo 000
}

# bench_up NAME PORT PATH CPUS -- COMMAND... — starts COMMAND in the background (logging to
# $BENCH_TMP/NAME.log), waits until PORT accepts connections and GET PATH answers 200.
# On success the target's URL is registered; on failure the reason and the log tail are
# printed, the process is stopped, and the target is marked failed (the run goes on).
bench_up() {
    local name=$1 port=$2 path=$3 cpus=$4 log=$BENCH_TMP/$1.log deadline status
    shift 5
    unset "BENCH_URL[$name]" "BENCH_FAIL[$name]"
    if [[ -n $cpus ]]; then set -- taskset -c "$cpus" "$@"; fi
    "$@" >"$log" 2>&1 &
    BENCH_PID[$name]=$!
    deadline=$((SECONDS + START_TIMEOUT))
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        if ! kill -0 "${BENCH_PID[$name]}" 2>/dev/null; then
            bench_fail "$name" "exited before accepting connections on port $port"
            return 1
        fi
        if ((SECONDS >= deadline)); then
            bench_fail "$name" "port $port not accepting connections after ${START_TIMEOUT}s"
            return 1
        fi
        sleep 0.1
    done
    status=$(bench_http_status "$port" "$path")
    if [[ $status == 000 ]]; then
        bench_fail "$name" "GET $path got no HTTP response (connection closed or reset)"
        return 1
    elif [[ $status != 200 ]]; then
        bench_fail "$name" "GET $path answered HTTP $status, expected 200"
        return 1
    fi
    BENCH_URL[$name]="http://127.0.0.1:$port$path"
    bench_log "$name up on port $port (pid ${BENCH_PID[$name]})"
}

# bench_fail NAME REASON — marks a target as not measurable and shows why.
bench_fail() {
    local name=$1 reason=$2
    BENCH_FAIL[$name]=$reason
    bench_log "ERROR: target '$name' failed to come up: $reason"
    if [[ -s $BENCH_TMP/$name.log ]]; then
        bench_log "last lines of $name's log:"
        tail -n 15 "$BENCH_TMP/$name.log" | sed 's/^/    /' >&2
    fi
    bench_stop "$name"
}

# bench_down NAME — stops the target's process if we started one.
bench_down() { bench_stop "$1"; unset "BENCH_URL[$1]"; }

# TERM (or the target's BENCH_STOP_SIGNAL), then KILL after 5 s: bounded even if a graceful
# shutdown hangs.
bench_stop() {
    local name=$1 pid i
    pid=${BENCH_PID[$name]:-}
    [[ -n $pid ]] || return 0
    unset "BENCH_PID[$name]"
    kill -"${BENCH_STOP_SIGNAL[$name]:-TERM}" "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# ---- measuring ------------------------------------------------------------------------------

# bench_cpu_ticks PID — utime + stime of PID in clock ticks (0 once it is gone).
bench_cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
# bench_now — seconds since the epoch, with nanoseconds.
bench_now() { date +%s.%N; }

# Reads wrk --latency output; prints "rps<TAB>p50 ms<TAB>p99 ms<TAB>errors", where errors counts
# non-2xx/3xx responses plus socket errors. wrk latency units (us, ms, s, m, h) become ms.
bench_parse_wrk() {
    awk '
        function ms(v,   n) {
            n = v + 0
            if (v ~ /us$/) return n / 1000
            if (v ~ /ms$/) return n
            if (v ~ /m$/)  return n * 60000
            if (v ~ /h$/)  return n * 3600000
            if (v ~ /s$/)  return n * 1000
            return n
        }
        $1 == "50%" { p50 = ms($2) }
        $1 == "99%" { p99 = ms($2) }
        $1 == "Requests/sec:" { rps = $2 }
        /Non-2xx or 3xx responses:/ { errors += $NF }
        /Socket errors:/ { gsub(/,/, ""); errors += $4 + $6 + $8 + $10 }
        END {
            if (rps == "") exit 1
            printf "%.0f\t%.3f\t%.3f\t%d\n", rps, p50, p99, errors
        }'
}

bench_wrk() {
    local duration=$1 url=$2 cmd=(wrk "-t$WRK_THREADS" "-c$WRK_CONNECTIONS" "-d${1}s" --latency "$2")
    [[ -n $WRK_CPUS ]] && cmd=(taskset -c "$WRK_CPUS" "${cmd[@]}")
    # wrk stops by itself; the timeout only guards against a wedged target. Run in the
    # background and waited for: bash ignores a Ctrl-C that its foreground child survives
    # (timeout puts wrk in its own process group), but a trapped signal always ends `wait`.
    timeout --signal=INT --kill-after=5 $((duration + 30)) "${cmd[@]}" &
    BENCH_WRK_PID=$!
    local status=0
    wait "$BENCH_WRK_PID" || status=$?
    BENCH_WRK_PID=""
    return "$status"
}

# bench_measure N TARGET ROUND — warm-up, measured run, one row in rows.tsv and one line out.
bench_measure() {
    local n=$1 target=$2 round=$3 url out row
    url=${BENCH_URL[$target]:-}
    if [[ -z $url ]]; then
        printf '%s\t%s\t%s\tFAIL\t-\t-\t-\n' "$n" "$target" "$round" >>"$BENCH_TMP/rows.tsv"
        return 0
    fi
    out=$BENCH_TMP/wrk-$n-$target-$round.txt
    if ((WARMUP > 0)); then bench_wrk "$WARMUP" "$url" >/dev/null 2>&1 || true; fi
    if bench_wrk "$DURATION" "$url" >"$out" 2>&1 && row=$(bench_parse_wrk <"$out"); then
        printf '%s\t%s\t%s\t%s\n' "$n" "$target" "$round" "$row" >>"$BENCH_TMP/rows.tsv"
        printf '  N=%s round %s %-10s %s\n' "$n" "$round" "$target" \
            "$(awk -F'\t' '{printf "%s rps  p50 %s ms  p99 %s ms  errors %s", $1, $2, $3, $4}' <<<"$row")" >&2
    else
        bench_log "ERROR: wrk against $target ($url) failed:"
        sed 's/^/    /' "$out" >&2
        printf '%s\t%s\t%s\tFAIL\t-\t-\t-\n' "$n" "$target" "$round" >>"$BENCH_TMP/rows.tsv"
    fi
}

# bench_run_rounds N TARGET... — ROUNDS rounds, each running the targets in the given order,
# so slow drift (thermal, noisy neighbours) hits every target alike.
bench_run_rounds() {
    local n=$1 round target
    shift
    for ((round = 1; round <= ROUNDS; round++)); do
        for target in "$@"; do
            bench_measure "$n" "$target" "$round"
        done
    done
    bench_print_rounds "$n"
}

# ---- reporting ------------------------------------------------------------------------------

bench_print_rounds() {
    echo
    echo "== $BENCH_NAME, N=$1 workers: every run (wrk -t$WRK_THREADS -c$WRK_CONNECTIONS -d${DURATION}s) =="
    awk -F'\t' -v n="$1" '
        BEGIN { printf "%-10s %5s %10s %9s %9s %8s\n", "target", "round", "rps", "p50 ms", "p99 ms", "errors" }
        $1 == n { printf "%-10s %5s %10s %9s %9s %8s\n", $2, $3, $4, $5, $6, $7 }' "$BENCH_TMP/rows.tsv"
}

# bench_summary N TARGETS PAIR... — median of each metric over the rounds that succeeded (each
# metric on its own), then for each "A/B" pair the ratios A÷B of median rps and median p99.
# Printed and kept for bench_write_results.
bench_summary() {
    local n=$1 targets=$2
    shift 2
    {
        echo
        echo "== $BENCH_NAME, N=$n workers: median over $ROUNDS round(s) =="
        awk -F'\t' -v n="$n" -v targets="$targets" -v pairs="$*" -v fails="$(bench_fail_list)" '
            function median(list,   a, k, i, j, t) {
                k = split(list, a, " ")
                if (k == 0) return ""
                for (i = 2; i <= k; i++) {            # insertion sort: k is the round count
                    t = a[i] + 0
                    for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]
                    a[j + 1] = t
                }
                return k % 2 ? a[(k + 1) / 2] + 0 : (a[k / 2] + a[k / 2 + 1]) / 2
            }
            function ratio(x, y) { return (x == "" || y == "" || y == 0) ? "n/a" : sprintf("%.2fx", x / y) }
            $1 == n && $4 != "FAIL" {
                rps[$2] = rps[$2] " " $4; p50[$2] = p50[$2] " " $5; p99[$2] = p99[$2] " " $6
                ok[$2]++; err[$2] += $7
            }
            END {
                printf "%-10s %10s %9s %9s %7s %8s\n", "target", "rps", "p50 ms", "p99 ms", "runs", "errors"
                nt = split(targets, t, " ")
                for (i = 1; i <= nt; i++) {
                    name = t[i]
                    mr[name] = median(rps[name]); m99[name] = median(p99[name])
                    if (ok[name] == 0) { printf "%-10s %10s %9s %9s %7s %8s\n", name, "FAIL", "-", "-", "0", "-"; continue }
                    printf "%-10s %10.0f %9.3f %9.3f %7s %8d\n", name, mr[name], median(p50[name]), m99[name], ok[name], err[name]
                }
                np = split(pairs, p, " ")
                if (np > 0) printf "%-18s %9s %9s\n", "ratio", "rps", "p99"
                for (i = 1; i <= np; i++) {
                    split(p[i], ab, "/")
                    printf "%-18s %9s %9s\n", p[i], ratio(mr[ab[1]], mr[ab[2]]), ratio(m99[ab[1]], m99[ab[2]])
                }
                if (fails != "") printf "not measured: %s\n", fails
            }' "$BENCH_TMP/rows.tsv"
    } | tee -a "$BENCH_TMP/summary.txt"
}

bench_fail_list() {
    local name out=""
    for name in "${!BENCH_FAIL[@]}"; do out+="$name (${BENCH_FAIL[$name]}); "; done
    echo "${out%; }"
}

# Appends the summaries of this run, with what it ran on, to $RESULTS.
bench_write_results() {
    mkdir -p "$(dirname "$RESULTS")"
    {
        echo
        echo "######## $BENCH_NAME $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
        echo "# host: $(uname -srm), $(nproc) CPUs; wrk -t$WRK_THREADS -c$WRK_CONNECTIONS -d${DURATION}s, warm-up ${WARMUP}s, $ROUNDS round(s)"
        echo "# $BENCH_SETTINGS"
        cat "$BENCH_TMP/summary.txt"
    } >>"$RESULTS"
    bench_log "summary appended to $RESULTS"
}

# bench_append_summary — appends the run's summary ($BENCH_TMP/summary.txt) to $RESULTS
# under a dated heading (scripts that print their own tables instead of wrk rounds).
bench_append_summary() {
    mkdir -p "$(dirname "$RESULTS")"
    {
        echo
        echo "######## $BENCH_NAME $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
        cat "$BENCH_TMP/summary.txt"
    } >>"$RESULTS"
    bench_log "summary appended to $RESULTS"
}

# ---- Redis ----------------------------------------------------------------------------------

# bench_redis_up [ARGS...] — starts a private redis-server ($REDIS_BIN, niceness $NICE) on a
# free port with persistence off and ARGS, as target `redis`; sets REDIS_PORT once it
# answers PING; dies if it does not.
bench_redis_up() {
    local deadline
    REDIS_PORT=$(bench_pick_port)
    nice -n "${NICE:-0}" "${REDIS_BIN:-redis-server}" --port "$REDIS_PORT" --bind 127.0.0.1 \
        --save '' --appendonly no --logfile "$BENCH_TMP/redis.log" "$@" &
    BENCH_PID[redis]=$!
    deadline=$((SECONDS + START_TIMEOUT))
    until [[ $(redis-cli -p "$REDIS_PORT" PING 2>/dev/null) == PONG ]]; do
        kill -0 "${BENCH_PID[redis]}" 2>/dev/null || bench_die "redis-server exited: $(tail -n 5 "$BENCH_TMP/redis.log")"
        ((SECONDS < deadline)) || bench_die "redis-server not answering on port $REDIS_PORT"
        sleep 0.1
    done
    bench_log "redis-server up on port $REDIS_PORT (pid ${BENCH_PID[redis]})"
}

# ---- agentgate ------------------------------------------------------------------------------

# bench_await_connected MODE OUT LOG GATEWAY [LOAD] — waits (bounded by CONNECT_PHASE_TIMEOUT
# + 60 s) for the sse_load program started as BENCH_PID[LOAD] (default `load`) to print its
# `CONNECTED k=v...` line to OUT, then stores each k=v as RES[MODE.c_k]. If the program exits
# or the time runs out: logs the tail of LOG, sets RES[MODE.status], stops the program and
# GATEWAY (each of them, when it is a list of names), and returns 1.
bench_await_connected() {
    local mode=$1 out=$2 log=$3 gateway=$4 load=${5:-load} deadline line kv g
    deadline=$((SECONDS + CONNECT_PHASE_TIMEOUT + 60))
    until grep -q '^CONNECTED ' "$out" 2>/dev/null; do
        if ! kill -0 "${BENCH_PID[$load]}" 2>/dev/null || ((SECONDS >= deadline)); then
            bench_log "ERROR: load program did not connect its clients; last lines of its log:"
            tail -n 15 "$log" | sed 's/^/    /' >&2
            RES[$mode.status]="FAIL: load program did not connect"
            bench_stop "$load"
            for g in $gateway; do bench_down "$g"; done
            return 1
        fi
        sleep 0.2
    done
    line=$(grep '^CONNECTED ' "$out")
    for kv in ${line#CONNECTED }; do RES[$mode.c_${kv%%=*}]=${kv#*=}; done
    bench_log "$mode: $line"
}

# bench_agentgate_up NAME PORT PATH CONFIG — validates CONFIG with `agentgate check-config`
# (so a schema mismatch is reported as such, not as "port never opened"), then serves it.
bench_agentgate_up() {
    local name=$1 port=$2 path=$3 config=$4 check
    if ! check=$("$AGENTGATE_BIN" check-config "$config" 2>&1); then
        printf 'agentgate check-config %s:\n%s\n' "$config" "$check" >"$BENCH_TMP/$name.log"
        bench_fail "$name" "agentgate check-config rejected the generated config (run with KEEP_TMP=1 to keep it)"
        return 1
    fi
    # SIGINT is agentgate's fast shutdown; TERM would wait for its graceful period.
    BENCH_STOP_SIGNAL[$name]=INT
    bench_up "$name" "$port" "$path" "$GATEWAY_CPUS" -- \
        env RUST_LOG="$AGENTGATE_LOG" "$AGENTGATE_BIN" serve --config "$config"
}

# bench_targets ALLOWED... — prints the targets of $TARGETS in canonical (ALLOWED) order;
# dies on an unknown name.
bench_targets() {
    local t out=()
    # shellcheck disable=SC2153 # TARGETS is set by the calling script
    for t in $TARGETS; do
        [[ " $* " == *" $t "* ]] || bench_die "unknown target '$t' in TARGETS (known: $*)"
    done
    for t in "$@"; do
        [[ " $TARGETS " == *" $t "* ]] && out+=("$t")
    done
    ((${#out[@]} > 0)) || bench_die "TARGETS is empty"
    echo "${out[*]}"
}
