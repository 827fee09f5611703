#!/usr/bin/env bash
# Proxy benchmark: the same origin measured directly, through agentgate (an upstream route),
# through nginx (a plain keep-alive reverse proxy) and through a bare hyper proxy
# (examples/bench_hyper_proxy.rs, the floor reference: what a tower-native proxy behind
# pingora could at best reach), for each worker count in $WORKERS. Targets alternate inside
# every round; medians and ratios come last. See bench/README.md.
#
#   bench/proxy.sh                                  # full run, ~4 min
#   DURATION=2 ROUNDS=1 TARGETS="origin nginx" bench/proxy.sh
set -euo pipefail

BENCH_NAME=proxy
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TARGETS=${TARGETS:-"origin agentgate nginx hyper"}
ORIGIN_THREADS=${ORIGIN_THREADS:-1}
NGINX_REUSEPORT=${NGINX_REUSEPORT:-0}

targets=$(bench_targets origin agentgate nginx hyper)
wants() { [[ " $targets " == *" $1 "* ]]; }

required=(wrk:wrk timeout:coreutils)
if wants nginx; then required+=(nginx:nginx); fi
bench_require "${required[@]}"
NGINX_BIN=${NGINX_BIN:-$(command -v nginx || echo /usr/sbin/nginx)}

build=(--example bench_origin)
if wants agentgate; then build+=(--bin agentgate); fi
if wants hyper; then build+=(--example bench_hyper_proxy); fi
bench_init
bench_build "${build[@]}"
ORIGIN_BIN=$BENCH_BIN_DIR/examples/bench_origin
AGENTGATE_BIN=${AGENTGATE_BIN:-$BENCH_BIN_DIR/agentgate}
HYPER_PROXY_BIN=$BENCH_BIN_DIR/examples/bench_hyper_proxy

# nginx as an ordinary reverse proxy at its usual best: N workers, keep-alive to the origin.
write_nginx_conf() {
    local n=$1 port=$2 origin_port=$3 dir=$BENCH_TMP/nginx-$1 listen_opts=""
    mkdir -p "$dir"
    if [[ $NGINX_REUSEPORT == 1 ]]; then listen_opts=" reuseport"; fi
    {
        # Workers would otherwise switch to "nobody", which may not exist or read $BENCH_TMP.
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
    # The default (1000) closes each client connection after 1000 requests, making wrk
    # reconnect all the time; neither agentgate nor the origin does that.
    keepalive_requests 1000000;
    upstream origin {
        server 127.0.0.1:$origin_port;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$port$listen_opts;
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

write_agentgate_conf() {
    local n=$1 port=$2 origin_port=$3 file=$BENCH_TMP/agentgate-proxy-$1.toml
    cat >"$file" <<CONF
[server]
listen = ["127.0.0.1:$port"]
threads = $n

[auth]
api_keys = ["bench-api-key-0123456789"]
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

# The origin stays up for the whole run: it is the upstream of every proxy, measured or not.
origin_port=$(bench_pick_port)
bench_up origin "$origin_port" / "$ORIGIN_CPUS" -- \
    "$ORIGIN_BIN" --addr "127.0.0.1:$origin_port" --threads "$ORIGIN_THREADS" ||
    bench_die "the origin did not come up; nothing can be measured"
wants origin || unset "BENCH_URL[origin]"

BENCH_SETTINGS="origin: bench_origin --threads $ORIGIN_THREADS${ORIGIN_CPUS:+ on CPUs $ORIGIN_CPUS}; nginx: worker_processes N, upstream keepalive 64, reuseport=$NGINX_REUSEPORT; agentgate: threads N, log $AGENTGATE_LOG; hyper: bench_hyper_proxy --threads N (current-thread runtime each)${GATEWAY_CPUS:+; peers on CPUs $GATEWAY_CPUS}"
bench_log "targets: $targets; N in: $WORKERS; $ROUNDS round(s) of ${DURATION}s (+${WARMUP}s warm-up)"

pairs=""
if wants agentgate && wants nginx; then pairs+=" agentgate/nginx"; fi
if wants agentgate && wants origin; then pairs+=" agentgate/origin"; fi
if wants agentgate && wants hyper; then pairs+=" agentgate/hyper"; fi
if wants hyper && wants nginx; then pairs+=" hyper/nginx"; fi
if wants nginx && wants origin; then pairs+=" nginx/origin"; fi
if wants hyper && wants origin; then pairs+=" hyper/origin"; fi

for n in $WORKERS; do
    if wants nginx; then
        port=$(bench_pick_port)
        dir=$(write_nginx_conf "$n" "$port" "$origin_port")
        bench_up nginx "$port" / "$GATEWAY_CPUS" -- \
            "$NGINX_BIN" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" -g 'daemon off;' || true
    fi
    if wants agentgate; then
        port=$(bench_pick_port)
        bench_agentgate_up agentgate "$port" / "$(write_agentgate_conf "$n" "$port" "$origin_port")" || true
    fi
    if wants hyper; then
        port=$(bench_pick_port)
        bench_up hyper "$port" / "$GATEWAY_CPUS" -- \
            "$HYPER_PROXY_BIN" --addr "127.0.0.1:$port" --upstream "127.0.0.1:$origin_port" --threads "$n" || true
    fi
    # shellcheck disable=SC2086 # word splitting of the target list is intended
    bench_run_rounds "$n" $targets
    bench_summary "$n" "$targets" "$pairs"
    bench_down nginx
    bench_down agentgate
    bench_down hyper
done
bench_write_results
