# Sourced by the benchmarks: builds the release binaries, makes a temp dir
# ($DIR) with certificates, a dfs.conf for Alice/Crimson33 (MD5 digest) and
# a dfc.conf, starts DFS1-DFS4 on 127.0.0.1 (ports picked by the OS), and
# stops them and removes $DIR on exit. Sets BIN, DIR, PIDS, PORTS, CLIENT
# (the client with the dfc.conf) and VAULT_PASSWORD. NODE_ARGS (words) are
# added to every `vault-node serve`, e.g. NODE_ARGS="--inline-max 16384".
cargo build --release --bins -q
BIN=$PWD/target/release
DIR=$(mktemp -d)
PIDS=(0 0 0 0)
PORTS=(0 0 0 0)
cleanup() {
    for p in "${PIDS[@]}"; do [ "$p" != 0 ] && kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -n "${KEEP_LOGS:-}" ] && cat "$DIR"/node*.log
    rm -rf "$DIR"
}
trap cleanup EXIT

# Starts node $1 (1-4) on port $2 (0: any); its port goes to PORTS.
start_node() {
    local i=$1 port=$2 line
    rm -f "$DIR/out$i"
    mkfifo "$DIR/out$i"
    RUST_LOG=warn "$BIN/vault-node" serve --root "$DIR/DFS$i" --name "DFS$i" \
        --listen "127.0.0.1:$port" --users "$DIR/dfs.conf" --certs "$DIR/certs" \
        ${NODE_ARGS:-} > "$DIR/out$i" 2>>"$DIR/node$i.log" &
    PIDS[$((i - 1))]=$!
    read -r line < "$DIR/out$i"
    PORTS[$((i - 1))]=${line##*:}
}

# Prints each node's peak RSS.
node_rss() {
    for i in 1 2 3 4; do
        awk -v n="DFS$i" '/VmHWM/ { printf "%s peak RSS %.1f MiB\n", n, $2 / 1024 }' "/proc/${PIDS[$((i - 1))]}/status"
    done
}

"$BIN/vault-node" certs --dir "$DIR/certs" --node DFS1 --node DFS2 --node DFS3 --node DFS4 --san 127.0.0.1 >/dev/null
printf 'Username: Alice\nPassword: %s\n' "$(printf Crimson33 | md5sum | cut -d' ' -f1)" > "$DIR/dfs.conf"
: > "$DIR/dfc.conf"
for i in 1 2 3 4; do
    start_node "$i" 0
    echo "Server DFS$i 127.0.0.1:${PORTS[$((i - 1))]}" >> "$DIR/dfc.conf"
done
echo "Username: Alice" >> "$DIR/dfc.conf"
export VAULT_PASSWORD=Crimson33
CLIENT=("$BIN/vault-client" -c "$DIR/dfc.conf")
