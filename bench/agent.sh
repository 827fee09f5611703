#!/usr/bin/env bash
# In-process agent route benchmark: `GET /healthz` answered by agentgate's default agent route
# (memory store, dispatch = "none") versus the SAME handler (the agent API service) mounted in a
# bare hyper server (examples/hyper_mount.rs), and, for reference, bench_origin (hyper with a
# trivial handler). All get N threads, for each N in $WORKERS; agentgate/hyper is what serving
# the API through the edge proxy costs on top of hyper. See bench/README.md.
#
#   bench/agent.sh                                  # full run, ~3 min
#   DURATION=2 ROUNDS=1 bench/agent.sh
set -euo pipefail

BENCH_NAME=agent
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TARGETS=${TARGETS:-"hyper agentgate origin"}
PATH_UNDER_TEST=/healthz

targets=$(bench_targets hyper agentgate origin)
wants() { [[ " $targets " == *" $1 "* ]]; }

bench_require wrk:wrk timeout:coreutils

build=()
if wants origin; then build+=(--example bench_origin); fi
if wants hyper; then build+=(--example hyper_mount); fi
if wants agentgate; then build+=(--bin agentgate); fi
bench_init
bench_build "${build[@]}"
ORIGIN_BIN=$BENCH_BIN_DIR/examples/bench_origin
HYPER_BIN=$BENCH_BIN_DIR/examples/hyper_mount
AGENTGATE_BIN=${AGENTGATE_BIN:-$BENCH_BIN_DIR/agentgate}

# No [[routes]]: the implicit agent route serves everything, /healthz included.
write_agentgate_conf() {
    local n=$1 port=$2 file=$BENCH_TMP/agentgate-agent-$1.toml
    cat >"$file" <<CONF
[server]
listen = ["127.0.0.1:$port"]
threads = $n

[auth]
api_keys = ["bench-api-key-0123456789"]
stream_token_secret = "bench-secret-bench-secret-bench-secret"

[store]
kind = "memory"

[agent]
dispatch = "none"
CONF
    echo "$file"
}

BENCH_SETTINGS="GET $PATH_UNDER_TEST; hyper: agent API in hyper_mount, N threads; origin: bench_origin --threads N${GATEWAY_CPUS:+ on CPUs $GATEWAY_CPUS}; agentgate: threads N, memory store, dispatch none, log $AGENTGATE_LOG"
bench_log "targets: $targets; N in: $WORKERS; $ROUNDS round(s) of ${DURATION}s (+${WARMUP}s warm-up)"

pairs=""
if wants agentgate && wants hyper; then pairs="agentgate/hyper"; fi
if wants agentgate && wants origin; then pairs="$pairs agentgate/origin"; fi

for n in $WORKERS; do
    # Here the origin is a peer, not a backend: it gets the same threads and CPUs as agentgate.
    if wants origin; then
        port=$(bench_pick_port)
        bench_up origin "$port" "$PATH_UNDER_TEST" "$GATEWAY_CPUS" -- \
            "$ORIGIN_BIN" --addr "127.0.0.1:$port" --threads "$n" || true
    fi
    if wants hyper; then
        port=$(bench_pick_port)
        bench_up hyper "$port" "$PATH_UNDER_TEST" "$GATEWAY_CPUS" -- \
            "$HYPER_BIN" "127.0.0.1:$port" "$n" || true
    fi
    if wants agentgate; then
        port=$(bench_pick_port)
        bench_agentgate_up agentgate "$port" "$PATH_UNDER_TEST" "$(write_agentgate_conf "$n" "$port")" || true
    fi
    # shellcheck disable=SC2086 # word splitting of the target list is intended
    bench_run_rounds "$n" $targets
    bench_summary "$n" "$targets" "$pairs"
    bench_down origin
    bench_down hyper
    bench_down agentgate
done
bench_write_results
