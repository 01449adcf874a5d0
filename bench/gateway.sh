#!/usr/bin/env bash
# Throughput and peak memory of the S3 gateway (`vault-client serve`) on
# loopback, against `vault-client put`/`get` over the same cluster.
#
#   bench/gateway.sh [SIZE_MIB]        (default 256)
#
# Builds release binaries, starts four `vault-node serve` processes on
# 127.0.0.1 (ports picked by the OS) as bench/cluster.sh does, then the
# gateway (`vault-client serve --s3 127.0.0.1:0 --web 127.0.0.1:0`). Makes a
# random file and times, under /usr/bin/time -v: `vault-client put` and
# `get` of it, then `aws s3 cp` up and down through the gateway (default aws
# cli settings: 8 MiB multipart parts and ranged GETs, 10 at once). Checks
# the bytes with `cmp`, prints MB/s of file data (10^6 bytes/s, whole
# command), the ratios gateway / vault-client, and the gateway's peak RSS
# (VmHWM) after start, after the upload and after the download. Everything
# it starts, it stops.
#
# Not sourcing bench/cluster.sh: it builds `--bins` of the whole workspace,
# which turns on vault-node's `testing` feature (the tests crate asks for
# it) and so builds a second vault-node.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${1:-256}
BYTES=$((SIZE_MIB * 1048576))
command -v aws >/dev/null || { echo "aws cli not found (pip install awscli, or apt-get install awscli)" >&2; exit 1; }

cargo build --release -q -p vault-node -p vault-cli
BIN=$PWD/target/release
DIR=$(mktemp -d)
PIDS=(0 0 0 0)
PORTS=(0 0 0 0)
GW=0
cleanup() {
    [ "$GW" != 0 ] && kill "$GW" 2>/dev/null || true
    for p in "${PIDS[@]}"; do [ "$p" != 0 ] && kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -n "${KEEP_LOGS:-}" ] && cat "$DIR"/node*.log "$DIR/gateway.log"
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

"$BIN/vault-node" certs --dir "$DIR/certs" --node DFS1 --node DFS2 --node DFS3 --node DFS4 --san 127.0.0.1 >/dev/null
printf 'Username: Alice\nPassword: %s\n' "$(printf Crimson33 | md5sum | cut -d' ' -f1)" > "$DIR/dfs.conf"
: > "$DIR/dfc.conf"
for i in 1 2 3 4; do
    start_node "$i" 0
    echo "Server DFS$i 127.0.0.1:${PORTS[$((i - 1))]}" >> "$DIR/dfc.conf"
done
echo "Username: Alice" >> "$DIR/dfc.conf"
export VAULT_PASSWORD=Crimson33
export VAULT_S3_SECRET=bench-secret-key-0123456789

# The gateway; its `s3:` line gives the port (bounded wait: 60 s).
: > "$DIR/gateway.out"
RUST_LOG=warn "$BIN/vault-client" -c "$DIR/dfc.conf" serve --s3 127.0.0.1:0 --web 127.0.0.1:0 \
    < /dev/null > "$DIR/gateway.out" 2> "$DIR/gateway.log" &
GW=$!
URL=
for _ in $(seq 600); do
    URL=$(awk '/^s3: / { print $2; exit }' "$DIR/gateway.out" || true)
    [ -n "$URL" ] && break
    kill -0 "$GW" 2>/dev/null || { cat "$DIR/gateway.log" >&2; exit 1; }
    sleep 0.1
done
[ -n "$URL" ] || { echo "gateway printed no s3: line in 60 s" >&2; cat "$DIR/gateway.log" >&2; exit 1; }

gw_rss() { # label: the gateway's peak (VmHWM) and current (VmRSS) RSS
    awk -v l="$1" '/VmHWM/ { h = $2 } /VmRSS/ { r = $2 }
        END { printf "gateway %-16s peak RSS %.1f MiB (now %.1f MiB)\n", l, h / 1024, r / 1024 }' "/proc/$GW/status"
}
gw_rss "after start"

unset AWS_PROFILE AWS_DEFAULT_PROFILE AWS_SESSION_TOKEN
export AWS_ACCESS_KEY_ID=Alice AWS_SECRET_ACCESS_KEY=$VAULT_S3_SECRET AWS_DEFAULT_REGION=us-east-1 \
    AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true \
    AWS_PAGER=
S3=(aws --endpoint-url "$URL" s3)
"${S3[@]}" mb s3://bench >/dev/null

head -c "$BYTES" /dev/urandom > "$DIR/big.bin"

declare -A MBS
measure() { # label, command...
    local label=$1; shift
    /usr/bin/time -v "$@" 2> "$DIR/time.txt" >/dev/null || { cat "$DIR/time.txt"; exit 1; }
    local secs rss cpu
    secs=$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i]; print s }' "$DIR/time.txt")
    rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$DIR/time.txt")
    cpu=$(awk -F': ' '/Percent of CPU/ { print $2 }' "$DIR/time.txt")
    MBS[$label]=$(awk -v b="$BYTES" -v s="$secs" 'BEGIN { printf "%.1f", b / s / 1e6 }')
    awk -v l="$label" -v b="$BYTES" -v s="$secs" -v r="$rss" -v c="$cpu" \
        'BEGIN { printf "%-7s %d MiB in %.2f s = %.0f MB/s, command peak RSS %.1f MiB, command CPU %s\n", l, b / 1048576, s, b / s / 1e6, r / 1024, c }'
}

measure PUT "$BIN/vault-client" -c "$DIR/dfc.conf" put "$DIR/big.bin"
measure GET "$BIN/vault-client" -c "$DIR/dfc.conf" get big.bin -o "$DIR/back.bin"
cmp "$DIR/big.bin" "$DIR/back.bin"
rm -f "$DIR/back.bin"
measure S3-UP "${S3[@]}" cp --only-show-errors "$DIR/big.bin" s3://bench/big.bin
gw_rss "after upload"
measure S3-DOWN "${S3[@]}" cp --only-show-errors s3://bench/big.bin "$DIR/back.bin"
gw_rss "after download"
cmp "$DIR/big.bin" "$DIR/back.bin" && echo "bytes match (vault-client get and aws s3 cp down)"
awk -v pu="${MBS[PUT]}" -v gu="${MBS[S3-UP]}" -v pd="${MBS[GET]}" -v gd="${MBS[S3-DOWN]}" \
    'BEGIN { printf "gateway / vault-client: up %.2f, down %.2f\n", gu / pu, gd / pd }'
echo "load average (1/5/15 min): $(cut -d' ' -f1-3 /proc/loadavg)"
