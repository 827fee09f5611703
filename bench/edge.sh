#!/usr/bin/env bash
# Edge listener benchmark (issue 14 item 6), two parts in one run, loopback only:
#
# sse: SSE viewers over HTTP/2 vs HTTP/1.1. One gateway configuration (memory store, a
#   cleartext listener with h2c and a TLS listener), a fresh gateway per mode; per mode
#   examples/sse_load.rs opens SESSIONS x CLIENTS_PER_SESSION streams (default 10,000) either
#   one HTTP/1.1 connection each or multiplexed over H2_CONNECTIONS HTTP/2 connections, then
#   appends RATE events/s. Per mode: gateway RSS per idle stream, delivery latency
#   append -> client, gateway CPU while appending, lost/duplicate events. Ratios against the
#   first mode (HTTP/1.1 over TLS by default).
# tls: agentgate vs nginx as TLS-terminating reverse proxies of examples/bench_origin.rs, the
#   same certificate (made here with openssl): full-handshake rate
#   (examples/tls_handshakes.rs, no resumption) and keep-alive requests/s over https (wrk),
#   each with the server's CPU per handshake / per request, targets alternating in every
#   round, medians and agentgate/nginx ratios.
#
# See bench/README.md, "Edge: HTTP/2 and TLS".
#
#   bench/edge.sh                                        # full run, ~8 min
#   CLIENTS_PER_SESSION=10 H2_CONNECTIONS=10 WORKERS=1 ROUNDS=1 DURATION=3 bench/edge.sh
#   PARTS=sse SSE_MODES="h1 h2c" bench/edge.sh           # cleartext HTTP/1.1 vs h2c only
set -euo pipefail

BENCH_NAME=edge
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PARTS=${PARTS:-"sse tls"}                 # parts to run, in this order

# ---- sse part -------------------------------------------------------------------------------
SESSIONS=${SESSIONS:-100}
CLIENTS_PER_SESSION=${CLIENTS_PER_SESSION:-100}
H2_CONNECTIONS=${H2_CONNECTIONS:-100}     # HTTP/2 connections the streams share
# Modes, the first is the baseline of the ratios: h1 (HTTP/1.1, cleartext), h2c (HTTP/2 prior
# knowledge, cleartext), h1-tls (HTTP/1.1 over TLS), h2-tls (HTTP/2 over TLS, ALPN h2).
SSE_MODES=${SSE_MODES:-"h1-tls h2-tls"}
RATE=${RATE:-100}                         # events/s appended, over all sessions
SSE_DURATION=${SSE_DURATION:-20}          # s measured
SSE_WARMUP=${SSE_WARMUP:-5}               # s appended before that
GATEWAY_THREADS=${GATEWAY_THREADS:-2}     # [server] threads of the sse part's gateway
LOAD_THREADS=${LOAD_THREADS:-2}           # tokio workers of sse_load
LOAD_CPUS=${LOAD_CPUS:-}                  # optional taskset CPU list for the load programs
CONNECT_CONCURRENCY=${CONNECT_CONCURRENCY:-256}
CONNECT_PHASE_TIMEOUT=${CONNECT_PHASE_TIMEOUT:-180}
DRAIN=${DRAIN:-10}                        # s clients get to receive the rest after the end
SETTLE=${SETTLE:-3}                       # s between "all connected" and the idle RSS reading
NICE=${NICE:-0}                           # niceness of gateway and load programs (<0: root)

# ---- tls part -------------------------------------------------------------------------------
TARGETS=${TARGETS:-"agentgate nginx"}
DURATION=${DURATION:-10}                  # s per measured run (handshakes and wrk)
WARMUP=${WARMUP:-2}
HANDSHAKE_CONCURRENCY=${HANDSHAKE_CONCURRENCY:-32}
HANDSHAKE_THREADS=${HANDSHAKE_THREADS:-1} # tokio workers of tls_handshakes
# ALPN the handshake client offers. Not h2 by default: a client that closes right after the
# handshake makes pingora log an ERROR ("H2 handshake error ... Broken pipe") per connection,
# which would be measured as handshake cost.
HANDSHAKE_ALPN=${HANDSHAKE_ALPN:-http/1.1}
ORIGIN_THREADS=${ORIGIN_THREADS:-1}
KEY_TYPE=${KEY_TYPE:-ec}                  # certificate key: ec (P-256) or rsa (2048 bits)

API_KEY=bench-api-key-0123456789
# Targets from the issue.
TARGET_H1_KIB=40
TARGET_H2_KIB=10

for n in "$SESSIONS" "$CLIENTS_PER_SESSION" "$H2_CONNECTIONS" "$RATE" "$SSE_DURATION" \
    "$SSE_WARMUP" "$GATEWAY_THREADS" "$LOAD_THREADS" "$CONNECT_CONCURRENCY" \
    "$CONNECT_PHASE_TIMEOUT" "$DRAIN" "$SETTLE" "$HANDSHAKE_CONCURRENCY" \
    "$HANDSHAKE_THREADS" "$ORIGIN_THREADS"; do
    [[ $n =~ ^[0-9]+$ ]] || bench_die "expected a whole number, got '$n'"
done
[[ $NICE =~ ^-?[0-9]+$ ]] || bench_die "NICE must be a whole number, got '$NICE'"
[[ $KEY_TYPE == ec || $KEY_TYPE == rsa ]] || bench_die "KEY_TYPE is ec or rsa, got '$KEY_TYPE'"
wants_part() { [[ " $PARTS " == *" $1 "* ]]; }
for p in $PARTS; do
    [[ $p == sse || $p == tls ]] || bench_die "PARTS takes 'sse' and/or 'tls', got '$p'"
done
for m in $SSE_MODES; do
    [[ $m =~ ^(h1|h2c|h1-tls|h2-tls)$ ]] || bench_die "unknown mode '$m' in SSE_MODES (h1 h2c h1-tls h2-tls)"
done
CLIENTS=$((SESSIONS * CLIENTS_PER_SESSION))

required=(openssl:openssl timeout:coreutils)
if wants_part tls; then
    targets=$(bench_targets agentgate nginx)
    required+=(wrk:wrk curl:curl)
    if [[ " $targets " == *" nginx "* ]]; then required+=(nginx:nginx); fi
fi
bench_require "${required[@]}"
NGINX_BIN=${NGINX_BIN:-$(command -v nginx || echo /usr/sbin/nginx)}
# One socket per HTTP/1.1 viewer in the load program and one in the gateway.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if wants_part sse && (($(ulimit -n) < CLIENTS + 1000)) && [[ $(ulimit -n) != unlimited ]]; then
    bench_log "WARNING: open-file limit $(ulimit -n) is low for $CLIENTS clients (+1000)"
fi

bench_init
build=(--bin agentgate)
if wants_part sse; then build+=(--example sse_load); fi
if wants_part tls; then build+=(--example tls_handshakes --example bench_origin); fi
bench_build "${build[@]}"
AGENTGATE_BIN=${AGENTGATE_BIN:-$BENCH_BIN_DIR/agentgate}
CLK_TCK=$(getconf CLK_TCK)

# ---- helpers --------------------------------------------------------------------------------

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
# utime + stime in clock ticks of each PID given, summed.
cpu_ticks() {
    local pid sum=0 t
    for pid in "$@"; do
        t=$(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null) || t=0
        sum=$((sum + ${t:-0}))
    done
    echo "$sum"
}
now() { date +%s.%N; }
# Busy ticks of the whole machine, and its interrupt ticks (loopback TCP is mostly processed
# there, charged to no process).
machine_busy() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
machine_irq() { awk '$1 == "cpu" { print $7 + $8 }' /proc/stat; }
# The processes that serve for target NAME: the one started, and for nginx its workers.
target_pids() {
    local pid=${BENCH_PID[$1]:-}
    [[ -n $pid ]] || return 0
    echo "$pid"
    ps -o pid= --ppid "$pid" 2>/dev/null || true
}
# shown CMD... — CMD as the report prints it: program names and the run's temp dir shortened.
shown() { local IFS=' '; echo "$*" | sed "s|$BENCH_BIN_DIR/examples/||g; s|$BENCH_TMP|\$TMP|g"; }
renice_all() {
    ((NICE != 0)) || return 0
    local task
    for task in /proc/"$1"/task/*; do
        renice -n "$NICE" -p "${task##*/}" >/dev/null 2>&1 || true
    done
}

# ---- certificate: a private CA and a P-256 (or RSA) leaf for localhost and 127.0.0.1 -------

CERT_DIR=$BENCH_TMP/cert
mkdir -p "$CERT_DIR"
make_cert() {
    local keyopt=(-newkey ec -pkeyopt ec_paramgen_curve:P-256)
    [[ $KEY_TYPE == rsa ]] && keyopt=(-newkey rsa:2048)
    (
        cd "$CERT_DIR"
        openssl req -x509 -new -nodes "${keyopt[@]}" -keyout ca.key -out ca.pem -days 2 \
            -subj "/CN=agentgate bench CA"
        openssl req -new -nodes "${keyopt[@]}" -keyout leaf.key -out leaf.csr -subj "/CN=localhost"
        printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
            "keyUsage=digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" >leaf.ext
        openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
            -extfile leaf.ext -out leaf.pem
    ) >"$BENCH_TMP/openssl.log" 2>&1 || bench_die "openssl failed: $(tail -n 5 "$BENCH_TMP/openssl.log")"
    chmod 644 "$CERT_DIR"/*
}
make_cert
CA=$CERT_DIR/ca.pem CHAIN=$CERT_DIR/leaf.pem KEY=$CERT_DIR/leaf.key
CERT_DESC="$( [[ $KEY_TYPE == ec ]] && echo "ECDSA P-256" || echo "RSA 2048") leaf signed by a private CA"

# tls_probe NAME PORT — one https GET / verified against the CA; marks NAME failed unless 200.
tls_probe() {
    local code
    code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 --cacert "$CA" \
        --resolve "localhost:$2:127.0.0.1" "https://localhost:$2/" 2>>"$BENCH_TMP/$1.log") || code=000
    if [[ $code != 200 ]]; then
        bench_fail "$1" "https GET / on port $2 answered $code, expected 200"
        return 1
    fi
}

# ---- part 1: SSE viewers over HTTP/2 vs HTTP/1.1 --------------------------------------------

declare -A RES=() # "<mode>.<key>" -> value

write_sse_conf() {
    local port=$1 tls_port=$2 file=$BENCH_TMP/agentgate-sse.toml
    cat >"$file" <<CONF
[server]
listen = ["127.0.0.1:$port"]
threads = $GATEWAY_THREADS
h2c = true

[server.tls]
listen = ["127.0.0.1:$tls_port"]

[[server.tls.certificates]]
chain = "$CHAIN"
key = "$KEY"

# 10,000 HTTP/1.1 viewers come from one address (default cap 1000).
[server.limits]
max_connections_per_address = 20_000

[auth]
api_keys = ["$API_KEY"]
stream_token_secret = "bench-secret-bench-secret-bench-secret"

[store]
kind = "memory"

# Every load-test session runs under one API key.
[store.quotas]
max_active_sessions_per_key = 1_000_000

[agent]
dispatch = "none"
CONF
    echo "$file"
}

# measure_mode MODE — fresh gateway, sse_load in MODE, readings into RES, gateway down.
measure_mode() {
    local m=$1 port tls_port conf gw load out go deadline base idle t0 t1 g0 g1 l0 l1 m0 m1 \
        i0 i1 rss rss_max line kv load_bound streams
    port=$(bench_pick_port)
    tls_port=$(bench_pick_port)
    conf=$(write_sse_conf "$port" "$tls_port")
    if ! bench_agentgate_up "gw-$m" "$port" /healthz "$conf"; then
        RES[$m.status]="FAIL: gateway did not come up"
        return 0
    fi
    gw=${BENCH_PID[gw-$m]}
    renice_all "$gw"
    sleep 1
    base=$(rss_kib "$gw")
    RES[$m.rss_base_kib]=$base

    out=$BENCH_TMP/load-$m.out
    go=$BENCH_TMP/go-$m
    local cmd=("$BENCH_BIN_DIR/examples/sse_load" --addr "127.0.0.1:$port" --api-key "$API_KEY"
        --sessions "$SESSIONS" --clients-per-session "$CLIENTS_PER_SESSION" --rate "$RATE"
        --duration "$SSE_DURATION" --warmup "$SSE_WARMUP"
        --connect-concurrency "$CONNECT_CONCURRENCY"
        --connect-phase-timeout "$CONNECT_PHASE_TIMEOUT" --go-file "$go" --idle-secs 120
        --drain "$DRAIN" --threads "$LOAD_THREADS")
    case $m in
        h2c | h2-tls) cmd+=(--h2-connections "$H2_CONNECTIONS") ;;
    esac
    case $m in
        *-tls) cmd+=(--stream-addr "127.0.0.1:$tls_port" --tls-ca "$CA") ;;
    esac
    RES[$m.command]=$(shown "${cmd[@]}")
    [[ -n $LOAD_CPUS ]] && cmd=(taskset -c "$LOAD_CPUS" "${cmd[@]}")
    cmd=(nice -n "$NICE" "${cmd[@]}")
    bench_log "sse $m: $SESSIONS sessions x $CLIENTS_PER_SESSION clients, $RATE events/s, ${SSE_WARMUP}s + ${SSE_DURATION}s"
    "${cmd[@]}" >"$out" 2>"$BENCH_TMP/load-$m.log" &
    BENCH_PID[load]=$!
    load=${BENCH_PID[load]}

    bench_await_connected "$m" "$out" "$BENCH_TMP/load-$m.log" "gw-$m" || return 0

    # Idle: every stream open, nothing appended yet.
    sleep "$SETTLE"
    idle=$(rss_kib "$gw")
    streams=${RES[$m.c_connected]}
    RES[$m.rss_idle_kib]=$idle
    RES[$m.rss_per_stream_kib]=$(awk -v a="$base" -v b="$idle" -v n="$streams" \
        'BEGIN { if (n > 0) printf "%.2f", (b - a) / n; else print "n/a" }')

    # Load: CPU over the append window, peak RSS sampled every 0.5 s.
    t0=$(now) g0=$(cpu_ticks "$gw") l0=$(cpu_ticks "$load") m0=$(machine_busy) i0=$(machine_irq)
    t1=$t0 g1=$g0 l1=$l0 m1=$m0 i1=$i0
    touch "$go"
    rss_max=$idle
    load_bound=$((SECONDS + SSE_WARMUP + SSE_DURATION + DRAIN + 60))
    while kill -0 "$load" 2>/dev/null; do
        if ((SECONDS >= load_bound)); then
            bench_log "ERROR: load program still running after its bound; stopping it"
            break
        fi
        if ! grep -q '^APPENDED ' "$out"; then
            t1=$(now) g1=$(cpu_ticks "$gw") l1=$(cpu_ticks "$load") m1=$(machine_busy) i1=$(machine_irq)
        fi
        rss=$(rss_kib "$gw")
        if ((rss > rss_max)); then rss_max=$rss; fi
        sleep 0.5
    done
    bench_stop load
    RES[$m.rss_max_kib]=$rss_max
    read -r "RES[$m.cpu_gw]" "RES[$m.cpu_load]" "RES[$m.cpu_irq]" "RES[$m.cpu_other]" < <(awk \
        -v t0="$t0" -v t1="$t1" -v g="$((g1 - g0))" -v l="$((l1 - l0))" -v m="$((m1 - m0))" \
        -v i="$((i1 - i0))" -v hz="$CLK_TCK" \
        'BEGIN { w = (t1 - t0) * hz; if (w <= 0) { print "n/a n/a n/a n/a"; exit }
                o = m - g - l - i; if (o < 0) o = 0
                printf "%.0f %.0f %.0f %.0f\n", 100*g/w, 100*l/w, 100*i/w, 100*o/w }')

    line=$(grep '^RESULT ' "$out" || true)
    if [[ -z $line ]]; then
        bench_log "ERROR: load program printed no RESULT; last lines of its log:"
        tail -n 15 "$BENCH_TMP/load-$m.log" | sed 's/^/    /' >&2
        RES[$m.status]="FAIL: no result from the load program"
    else
        for kv in ${line#RESULT }; do RES[$m.${kv%%=*}]=${kv#*=}; done
        RES[$m.status]=ok
        sed 's/^/    /' "$BENCH_TMP/load-$m.log" >&2
    fi
    bench_down "gw-$m"
}

sse_report() {
    local modes base=${SSE_MODES%% *} m
    read -r -a modes <<<"$SSE_MODES"
    get() { echo "${RES[$1.$2]:-n/a}"; }
    ratio() { # ratio MODE KEY: MODE's value / the baseline's
        awk -v a="$(get "$1" "$2")" -v b="$(get "$base" "$2")" \
            'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b + 0 > 0) printf "%.2fx", a / b; else print "-" }'
    }
    mib() { awk -v k="$1" 'BEGIN { if (k ~ /^[0-9]+$/) printf "%.1f", k / 1024; else print "n/a" }'; }
    verdict() {
        awk -v v="$1" -v max="$2" 'BEGIN { if (v !~ /^[0-9.]+$/) print "n/a"; else if (v + 0 <= max + 0) printf "PASS (%s)", v; else printf "MISS (%s)", v }'
    }
    # row LABEL KEY [ratio] — one value per mode, then MODE/baseline for the other modes.
    row() {
        local label=$1 key=$2 with_ratio=${3:-} out
        out=$(printf '%-34s' "$label")
        for m in "${modes[@]}"; do out+=$(printf ' %14s' "$(get "$m" "$key")"); done
        if [[ -n $with_ratio ]]; then
            for m in "${modes[@]:1}"; do out+=$(printf ' %12s' "$(ratio "$m" "$key")"); done
        fi
        echo "$out"
    }
    rowv() { # rowv LABEL VALUE-FUNCTION: a computed value per mode
        local label=$1 fn=$2 out
        out=$(printf '%-34s' "$label")
        for m in "${modes[@]}"; do out+=$(printf ' %14s' "$($fn "$m")"); done
        echo "$out"
    }
    connected() { echo "$(get "$1" c_connected)/$CLIENTS"; }
    conns() { case $1 in h2*) echo "$H2_CONNECTIONS" ;; *) get "$1" c_connected ;; esac; }
    base_mib() { mib "$(get "$1" rss_base_kib)"; }
    idle_mib() { mib "$(get "$1" rss_idle_kib)"; }
    peak_mib() { mib "$(get "$1" rss_max_kib)"; }
    lost_dup() { echo "$(get "$1" missing) / $(get "$1" duplicates)"; }
    order_unexp() { echo "$(get "$1" out_of_order) / $(get "$1" unexpected)"; }
    target() { case $1 in h2*) verdict "$(get "$1" rss_per_stream_kib)" $TARGET_H2_KIB ;; *) verdict "$(get "$1" rss_per_stream_kib)" $TARGET_H1_KIB ;; esac; }
    {
        echo
        echo "== edge sse: $SESSIONS sessions x $CLIENTS_PER_SESSION clients = $CLIENTS SSE streams, $RATE events/s, ${SSE_WARMUP}s warm-up + ${SSE_DURATION}s measured =="
        echo "# host: $(uname -srm), $(nproc) CPUs; gateway threads $GATEWAY_THREADS, memory store, fresh gateway per mode; load threads $LOAD_THREADS${LOAD_CPUS:+ on CPUs $LOAD_CPUS}; nice $NICE; HTTP/2: $H2_CONNECTIONS connections; TLS: $CERT_DESC"
        local head
        head=$(printf '%-34s' "metric")
        for m in "${modes[@]}"; do head+=$(printf ' %14s' "$m"); done
        for m in "${modes[@]:1}"; do head+=$(printf ' %12s' "$m/$base"); done
        echo "$head"
        row "status" status
        row "transport (sse_load)" transport
        rowv "streams connected" connected
        rowv "client connections" conns
        row "connect failures" c_failed
        row "time to connect all (s)" c_secs ratio
        rowv "gateway RSS before (MiB)" base_mib
        rowv "gateway RSS all idle (MiB)" idle_mib
        row "RSS per idle stream (KiB)" rss_per_stream_kib ratio
        rowv "gateway RSS peak under load (MiB)" peak_mib
        row "appended events/s" append_rate ratio
        row "failed appends" append_errors
        row "deliveries expected (measured)" expected_deliveries
        row "deliveries received (measured)" delivered ratio
        row "latency p50 (ms)" p50_ms ratio
        row "latency p99 (ms)" p99_ms ratio
        row "latency max (ms)" max_ms ratio
        rowv "lost / duplicate events" lost_dup
        rowv "out of order / unexpected" order_unexp
        row "abnormal stream ends" ended
        echo "CPU while appending, % of one core ($(nproc) cores = $(($(nproc) * 100))%):"
        row "CPU % gateway" cpu_gw ratio
        row "CPU % load program" cpu_load ratio
        row "CPU % interrupts (loopback TCP)" cpu_irq ratio
        row "CPU % other processes" cpu_other
        rowv "target (h1 <= $TARGET_H1_KIB, h2 <= $TARGET_H2_KIB KiB)" target
        echo "# commands (sse_load, per mode):"
        for m in "${modes[@]}"; do echo "#   $m: $(get "$m" command)"; done
    } | tee -a "$BENCH_TMP/summary.txt"
}

if wants_part sse; then
    for m in $SSE_MODES; do measure_mode "$m"; done
    sse_report
fi

# ---- part 2: TLS handshakes and proxied requests, agentgate vs nginx ------------------------

write_nginx_tls_conf() {
    local n=$1 port=$2 tls_port=$3 origin_port=$4 dir=$BENCH_TMP/nginx-$1
    mkdir -p "$dir"
    {
        if ((EUID == 0)); then echo "user root;"; fi
        cat <<CONF
worker_processes $n;
worker_rlimit_nofile 16384;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events {
    worker_connections 4096;
}
http {
    access_log off;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 1000000;
    upstream origin {
        server 127.0.0.1:$origin_port;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        # The cleartext listener is for the readiness probe only.
        listen 127.0.0.1:$port;
        # ALPN h2 and http/1.1, as agentgate's TLS listener offers.
        listen 127.0.0.1:$tls_port ssl http2;
        ssl_certificate $CHAIN;
        ssl_certificate_key $KEY;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
CONF
    } >"$dir/nginx.conf"
    echo "$dir"
}

write_agentgate_tls_conf() {
    local n=$1 port=$2 tls_port=$3 origin_port=$4 file=$BENCH_TMP/agentgate-tls-$1.toml
    cat >"$file" <<CONF
[server]
listen = ["127.0.0.1:$port"]
threads = $n

[server.tls]
listen = ["127.0.0.1:$tls_port"]

[[server.tls.certificates]]
chain = "$CHAIN"
key = "$KEY"

[auth]
api_keys = ["$API_KEY"]
stream_token_secret = "bench-secret-bench-secret-bench-secret"

[[routes]]
name = "backend"
kind = "upstream"
path_prefix = "/"
upstream = "origin"

[upstreams.origin]
peers = ["127.0.0.1:$origin_port"]
CONF
    echo "$file"
}

declare -A TLS_PORT=() # target -> its TLS port

# tls_round N TARGET ROUND — one handshake run and one wrk run against TARGET; one row in
# tls.tsv: n target round hs/s hs_p99 hs_cpu_us hs_cpu% hs_errors rps p99 req_cpu_us req_cpu% errors.
tls_round() {
    local n=$1 target=$2 round=$3 port pids out c0 c1 t0 t1 hs row wrk_out
    port=${TLS_PORT[$target]:-}
    if [[ -z $port || -z ${BENCH_PID[$target]:-} ]]; then
        printf '%s\t%s\t%s\tFAIL\n' "$n" "$target" "$round" >>"$BENCH_TMP/tls.tsv"
        return 0
    fi
    # shellcheck disable=SC2207 # one pid per line
    pids=($(target_pids "$target"))
    out=$BENCH_TMP/hs-$n-$target-$round.out
    local cmd=("$BENCH_BIN_DIR/examples/tls_handshakes" --addr "127.0.0.1:$port" --ca "$CA"
        --concurrency "$HANDSHAKE_CONCURRENCY" --threads "$HANDSHAKE_THREADS" --alpn "$HANDSHAKE_ALPN"
        --warmup "$WARMUP" --duration "$DURATION")
    TLS_HS_COMMAND=$(shown "${cmd[@]}")
    [[ -n $LOAD_CPUS ]] && cmd=(taskset -c "$LOAD_CPUS" "${cmd[@]}")
    timeout --kill-after=5 $((WARMUP + DURATION + 30)) "${cmd[@]}" >"$out" 2>"$out.log" &
    BENCH_PID[handshakes]=$!
    sleep "$WARMUP"
    t0=$(now) c0=$(cpu_ticks "${pids[@]}")
    wait "${BENCH_PID[handshakes]}" || true
    unset "BENCH_PID[handshakes]"
    t1=$(now) c1=$(cpu_ticks "${pids[@]}")
    hs=$(awk '/^RESULT / { for (i = 2; i <= NF; i++) { split($i, kv, "="); r[kv[1]] = kv[2] }
              printf "%s %s %s", r["handshakes"], r["p99_ms"], r["errors"] }' "$out")
    if [[ -z $hs ]]; then
        bench_log "ERROR: tls_handshakes against $target printed no RESULT:"
        sed 's/^/    /' "$out.log" >&2
        hs="- - -"
    fi
    [[ -z ${TLS_NEGOTIATED[$target]:-} ]] &&
        TLS_NEGOTIATED[$target]=$(grep -o 'version=.*' "$out" 2>/dev/null || true)
    row=$(awk -v hs="$hs" -v c="$((c1 - c0))" -v t0="$t0" -v t1="$t1" -v d="$DURATION" -v hz="$CLK_TCK" '
        BEGIN { split(hs, h, " "); w = t1 - t0
                if (h[1] !~ /^[0-9]+$/ || h[1] == 0 || w <= 0) { printf "-\t-\t-\t-\t-"; exit }
                pct = 100 * c / hz / w
                printf "%.0f\t%s\t%.0f\t%.0f\t%s", h[1] / d, h[2], pct / 100 * d * 1e6 / h[1], pct, h[3] }')

    # Proxied requests over https, keep-alive: a warm-up run, then the measured one.
    wrk_out=$BENCH_TMP/wrk-$n-$target-$round.txt
    local url="https://127.0.0.1:$port/"
    if ((WARMUP > 0)); then bench_wrk "$WARMUP" "$url" >/dev/null 2>&1 || true; fi
    t0=$(now) c0=$(cpu_ticks "${pids[@]}")
    local w="-	-	-"
    if bench_wrk "$DURATION" "$url" >"$wrk_out" 2>&1 && w=$(bench_parse_wrk <"$wrk_out"); then
        t1=$(now) c1=$(cpu_ticks "${pids[@]}")
        w=$(awk -F'\t' -v c="$((c1 - c0))" -v t0="$t0" -v t1="$t1" -v hz="$CLK_TCK" '
            { rps = $1; pct = 100 * c / hz / (t1 - t0)
              printf "%s\t%s\t%.1f\t%.0f\t%s", rps, $3, (rps > 0 ? pct / 100 * 1e6 / rps : 0), pct, $4 }' <<<"$w")
    else
        bench_log "ERROR: wrk against $target ($url) failed:"
        sed 's/^/    /' "$wrk_out" >&2
        w="-	-	-	-	-"
    fi
    printf '%s\t%s\t%s\t%s\t%s\n' "$n" "$target" "$round" "$row" "$w" >>"$BENCH_TMP/tls.tsv"
    printf '  N=%s round %s %-10s %s\n' "$n" "$round" "$target" "$(awk -F'\t' '{
        printf "%s handshakes/s (p99 %s ms, %s us CPU each, CPU %s%%, errors %s); %s rps (p99 %s ms, %s us CPU each, CPU %s%%, errors %s)",
            $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 }' <<<"$row	$w")" >&2
}

declare -A TLS_NEGOTIATED=()
TLS_HS_COMMAND=""

tls_summary() {
    local n=$1
    {
        echo
        echo "== edge tls, N=$n workers: median over $ROUNDS round(s); $CERT_DESC =="
        awk -F'\t' -v n="$n" -v targets="$targets" -v fails="$(bench_fail_list)" '
            function median(list,   a, k, i, j, t) {
                k = split(list, a, " ")
                if (k == 0) return ""
                for (i = 2; i <= k; i++) {
                    t = a[i] + 0
                    for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]
                    a[j + 1] = t
                }
                return k % 2 ? a[(k + 1) / 2] + 0 : (a[k / 2] + a[k / 2 + 1]) / 2
            }
            function ratio(x, y) { return (x == "" || y == "" || y == 0) ? "-" : sprintf("%.2fx", x / y) }
            $1 == n && $4 != "FAIL" {
                for (c = 4; c <= 13; c++) if ($c != "-") v[$2, c] = v[$2, c] " " $c
                if ($4 != "-") hs_ok[$2]++
                if ($9 != "-") req_ok[$2]++
                if ($8 != "-") e_hs[$2] += $8
                if ($13 != "-") e_req[$2] += $13
            }
            END {
                printf "%-16s %12s %9s %10s %6s %7s %10s %9s %10s %6s %7s\n", "target", "handshake/s", "p99 ms", "CPU us/hs", "CPU%", "errors", "https rps", "p99 ms", "CPU us/req", "CPU%", "errors"
                nt = split(targets, t, " ")
                for (i = 1; i <= nt; i++) {
                    x = t[i]
                    for (c = 4; c <= 11; c++) if (c != 8) med[x, c] = median(v[x, c])
                    printf "%-16s %12s %9s %10s %6s %7s %10s %9s %10s %6s %7s\n", x,
                        hs_ok[x] ? sprintf("%.0f", med[x, 4]) : "FAIL", med[x, 5], med[x, 6], med[x, 7], hs_ok[x] ? e_hs[x] + 0 : "-",
                        req_ok[x] ? sprintf("%.0f", med[x, 9]) : "FAIL", med[x, 10], med[x, 11], median(v[x, 12]), req_ok[x] ? e_req[x] + 0 : "-"
                }
                if (nt == 2) {
                    a = t[1]; b = t[2]
                    printf "%-16s %12s %9s %10s %6s %7s %10s %9s %10s\n", a "/" b,
                        ratio(med[a, 4], med[b, 4]), ratio(med[a, 5], med[b, 5]), ratio(med[a, 6], med[b, 6]), "", "",
                        ratio(med[a, 9], med[b, 9]), ratio(med[a, 10], med[b, 10]), ratio(med[a, 11], med[b, 11])
                }
                if (fails != "") printf "not measured: %s\n", fails
            }' "$BENCH_TMP/tls.tsv"
        local x
        for x in $targets; do echo "# $x negotiated: ${TLS_NEGOTIATED[$x]:-n/a}"; done
    } | tee -a "$BENCH_TMP/summary.txt"
}

if wants_part tls; then
    : >"$BENCH_TMP/tls.tsv"
    origin_port=$(bench_pick_port)
    bench_up origin "$origin_port" / "$ORIGIN_CPUS" -- \
        "$BENCH_BIN_DIR/examples/bench_origin" --addr "127.0.0.1:$origin_port" --threads "$ORIGIN_THREADS" ||
        bench_die "the origin did not come up; nothing can be measured"
    bench_log "tls: targets $targets; N in: $WORKERS; $ROUNDS round(s) of ${DURATION}s (+${WARMUP}s warm-up) per measurement"
    for n in $WORKERS; do
        if [[ " $targets " == *" nginx "* ]]; then
            port=$(bench_pick_port) TLS_PORT[nginx]=$(bench_pick_port)
            dir=$(write_nginx_tls_conf "$n" "$port" "${TLS_PORT[nginx]}" "$origin_port")
            bench_up nginx "$port" / "$GATEWAY_CPUS" -- \
                "$NGINX_BIN" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" -g 'daemon off;' &&
                tls_probe nginx "${TLS_PORT[nginx]}" || true
        fi
        if [[ " $targets " == *" agentgate "* ]]; then
            port=$(bench_pick_port) TLS_PORT[agentgate]=$(bench_pick_port)
            bench_agentgate_up agentgate "$port" / \
                "$(write_agentgate_tls_conf "$n" "$port" "${TLS_PORT[agentgate]}" "$origin_port")" &&
                tls_probe agentgate "${TLS_PORT[agentgate]}" || true
        fi
        for ((round = 1; round <= ROUNDS; round++)); do
            for target in $targets; do tls_round "$n" "$target" "$round"; done
        done
        tls_summary "$n"
        bench_down nginx
        bench_down agentgate
    done
    {
        echo "# handshakes: $TLS_HS_COMMAND"
        echo "# requests:   wrk -t$WRK_THREADS -c$WRK_CONNECTIONS -d${DURATION}s --latency https://127.0.0.1:PORT/ (after a ${WARMUP}s warm-up run)"
        echo "# agentgate: threads N, [server.tls], an upstream route to bench_origin; nginx: worker_processes N, listen ssl http2, upstream keepalive 64; origin: bench_origin --threads $ORIGIN_THREADS"
    } | tee -a "$BENCH_TMP/summary.txt"
fi

bench_append_summary
