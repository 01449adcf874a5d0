#!/usr/bin/env bash
# PUT/GET throughput and peak memory of the real binaries on loopback.
#
#   bench/throughput.sh [SIZE_MIB]        (default 256)
#
# Builds release binaries, starts four `vault-node serve` processes on
# 127.0.0.1 (ports picked by the OS), stores and fetches a random file with
# `vault-client` under /usr/bin/time -v, checks the bytes, and prints MB/s of
# file data (10^6 bytes/s, whole command including login and Argon2id) and
# the peak RSS of the client and of each node. Everything it starts, it stops.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${1:-256}
cargo build --release --bins -q
BIN=$PWD/target/release
DIR=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

"$BIN/vault-node" certs --dir "$DIR/certs" --node DFS1 --node DFS2 --node DFS3 --node DFS4 --san 127.0.0.1 >/dev/null
printf 'Username: Alice\nPassword: %s\n' "$(printf Crimson33 | md5sum | cut -d' ' -f1)" > "$DIR/dfs.conf"
: > "$DIR/dfc.conf"
for i in 1 2 3 4; do
    mkfifo "$DIR/out$i"
    RUST_LOG=warn "$BIN/vault-node" serve --root "$DIR/DFS$i" --name "DFS$i" --port 0 \
        --listen 127.0.0.1:0 --users "$DIR/dfs.conf" --certs "$DIR/certs" > "$DIR/out$i" &
    PIDS+=($!)
    read -r line < "$DIR/out$i"
    echo "Server DFS$i ${line##* }" >> "$DIR/dfc.conf"
done
echo "Username: Alice" >> "$DIR/dfc.conf"
export VAULT_PASSWORD=Crimson33

head -c "$((SIZE_MIB * 1048576))" /dev/urandom > "$DIR/big.bin"
BYTES=$((SIZE_MIB * 1048576))

measure() { # label, command...
    local label=$1; shift
    /usr/bin/time -v "$@" 2> "$DIR/time.txt" >/dev/null || { cat "$DIR/time.txt"; exit 1; }
    local secs rss
    secs=$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i]; print s }' "$DIR/time.txt")
    rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$DIR/time.txt")
    local cpu; cpu=$(awk -F": " '/Percent of CPU/ { print $2 }' "$DIR/time.txt")
    awk -v l="$label" -v b="$BYTES" -v s="$secs" -v r="$rss" -v c="$cpu" \
        'BEGIN { printf "%-4s %d MiB in %.2f s = %.0f MB/s, client peak RSS %.1f MiB, client CPU %s\n", l, b / 1048576, s, b / s / 1e6, r / 1024, c }'
}

measure PUT "$BIN/vault-client" -c "$DIR/dfc.conf" put "$DIR/big.bin"
measure GET "$BIN/vault-client" -c "$DIR/dfc.conf" get big.bin -o "$DIR/back.bin"
cmp "$DIR/big.bin" "$DIR/back.bin" && echo "bytes match"
for i in 1 2 3 4; do
    awk -v n="DFS$i" '/VmHWM/ { printf "%s peak RSS %.1f MiB\n", n, $2 / 1024 }' "/proc/${PIDS[$((i - 1))]}/status"
done
