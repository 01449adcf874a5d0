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
. bench/cluster.sh

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
node_rss
