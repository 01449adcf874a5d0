#!/usr/bin/env bash
# PUT/GET of one big file: the classic layout (4 nodes, each part on two)
# against Reed-Solomon RS(2,2) on the same four nodes and RS(4,2) on six.
#
#   bench/erasure.sh [SIZE_MIB]        (default 256; RUNS=3 runs each)
#
# Builds release binaries, starts two dev clusters on 127.0.0.1 (free
# ports): `vault-node dev-cluster --nodes 4 --base-port 0` and `--nodes 6`,
# each one process holding all its nodes. Three client configurations:
#   classic  the 4-node cluster's dfc.conf as written (no Redundancy line)
#   rs 2+2   a copy of it with `Redundancy rs 2+2` added
#   rs 4+2   the 6-node cluster's dfc.conf with `Redundancy rs 4+2`
# For RUNS rounds, each configuration in turn (interleaved, so drift in the
# machine's load hits all three alike): `vault-client put` a random file,
# `get` it back under /usr/bin/time -v, `cmp` the bytes, `delete` it.
# Reports, as medians of the runs: wall time and MB/s of file data (10^6
# bytes/s, whole command including login and Argon2id), the bytes the PUT
# added on the nodes (sum over the nodes of `du -sb` of the user folder,
# uploads in progress excluded), the CPU seconds of the client (user+sys)
# and of the cluster process (all its nodes, from /proc), and the ratios
# against classic from the same run. A `list` (login and manifests, no file
# data) is timed once per configuration: the fixed cost in every command.
# Everything it starts, it stops.
#
# Not sourcing bench/cluster.sh: it starts four `vault-node serve`
# processes, and builds `--bins` of the whole workspace (see gateway.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${1:-256}
RUNS=${RUNS:-3}
BYTES=$((SIZE_MIB * 1048576))

cargo build --release -q -p vault-node -p vault-cli
BIN=$PWD/target/release
DIR=$(mktemp -d)
CL_PIDS=()
cleanup() {
    for p in "${CL_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -n "${KEEP_LOGS:-}" ] && cat "$DIR"/*.log
    rm -rf "$DIR"
}
trap cleanup EXIT

# Starts a dev cluster of $2 nodes in folder $1; waits (60 s at most) for
# its banner. Standard input at its end: the cluster keeps running until
# SIGTERM (see `vault-node dev-cluster --help`).
start_cluster() {
    local d=$1 n=$2 pid
    RUST_LOG=warn "$BIN/vault-node" dev-cluster --nodes "$n" --base-port 0 --dir "$d" \
        < /dev/null > "$d.out" 2> "$d.log" &
    pid=$!
    CL_PIDS+=("$pid")
    for _ in $(seq 600); do
        grep -q 'nodes running' "$d.out" 2>/dev/null && [ -f "$d/dfc.conf" ] && { echo "$pid" > "$d.pid"; return; }
        kill -0 "$pid" 2>/dev/null || { cat "$d.log" >&2; exit 1; }
        sleep 0.1
    done
    echo "dev cluster in $d printed no banner in 60 s" >&2
    cat "$d.log" >&2
    exit 1
}

start_cluster "$DIR/c4" 4
start_cluster "$DIR/c6" 6
C4_PID=$(cat "$DIR/c4.pid")
C6_PID=$(cat "$DIR/c6.pid")
cp "$DIR/c4/dfc.conf" "$DIR/c4/dfc-rs22.conf"
echo "Redundancy rs 2+2" >> "$DIR/c4/dfc-rs22.conf"
cp "$DIR/c6/dfc.conf" "$DIR/c6/dfc-rs42.conf"
echo "Redundancy rs 4+2" >> "$DIR/c6/dfc-rs42.conf"
grep -q '^Redundancy' "$DIR/c4/dfc.conf" && { echo "the 4-node dfc.conf already has a Redundancy line" >&2; exit 1; }
export VAULT_PASSWORD=Crimson33

LABELS=(classic "rs 2+2" "rs 4+2")
declare -A CONF=([classic]="$DIR/c4/dfc.conf" ["rs 2+2"]="$DIR/c4/dfc-rs22.conf" ["rs 4+2"]="$DIR/c6/dfc-rs42.conf")
declare -A CROOT=([classic]="$DIR/c4" ["rs 2+2"]="$DIR/c4" ["rs 4+2"]="$DIR/c6")
declare -A CPID=([classic]="$C4_PID" ["rs 2+2"]="$C4_PID" ["rs 4+2"]="$C6_PID")
declare -A NODES=([classic]=4 ["rs 2+2"]=4 ["rs 4+2"]=6)

TICK=$(getconf CLK_TCK)
# CPU seconds (user+sys) the process $1 has used so far.
proc_cpu() { awk -v t="$TICK" '{ sub(/^.*\) /, ""); print ($12 + $13) / t }' "/proc/$1/stat"; }
# Bytes held for alice on the nodes of cluster folder $1 (uploads in
# progress excluded).
stored() {
    local total=0 d b
    for d in "$1"/DFS*/alice; do
        [ -d "$d" ] || continue
        b=$(du -sb --exclude=.tmp "$d" | cut -f1)
        total=$((total + b))
    done
    echo "$total"
}
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

# measure LABEL OP command...: runs it under /usr/bin/time -v; sets SECS,
# CCPU (client CPU s), NCPU (cluster CPU s), RSS (client peak, MiB).
measure() {
    local label=$1 op=$2; shift 2
    local before after
    before=$(proc_cpu "${CPID[$label]}")
    /usr/bin/time -v "$@" 2> "$DIR/time.txt" >/dev/null || { cat "$DIR/time.txt"; exit 1; }
    after=$(proc_cpu "${CPID[$label]}")
    SECS=$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i]; print s }' "$DIR/time.txt")
    CCPU=$(awk -F': ' '/User time/ { u = $2 } /System time/ { s = $2 } END { print u + s }' "$DIR/time.txt")
    RSS=$(awk -F': ' '/Maximum resident set size/ { printf "%.1f", $2 / 1024 }' "$DIR/time.txt")
    NCPU=$(awk -v a="$after" -v b="$before" 'BEGIN { printf "%.2f", a - b }')
}

head -c "$BYTES" /dev/urandom > "$DIR/big.bin"
echo "file: $SIZE_MIB MiB random, $RUNS run(s) per configuration, $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"

declare -A LIST
for label in "${LABELS[@]}"; do
    measure "$label" list "$BIN/vault-client" -c "${CONF[$label]}" list
    LIST[$label]=$SECS
done

declare -A PUT_S GET_S STORED PUT_C PUT_N GET_C GET_N PUT_R GET_R
for run in $(seq "$RUNS"); do
    for label in "${LABELS[@]}"; do
        conf=${CONF[$label]}
        s0=$(stored "${CROOT[$label]}")
        measure "$label" put "$BIN/vault-client" -c "$conf" put "$DIR/big.bin"
        PUT_S[$label]+=" $SECS"; PUT_C[$label]+=" $CCPU"; PUT_N[$label]+=" $NCPU"; PUT_R[$label]+=" $RSS"
        s1=$(stored "${CROOT[$label]}")
        STORED[$label]+=" $((s1 - s0))"
        printf '%-8s run %d PUT %6.2f s  client CPU %6.2f s  cluster CPU %6.2f s  stored %d bytes\n' \
            "$label" "$run" "$SECS" "$CCPU" "$NCPU" "$((s1 - s0))"
        measure "$label" get "$BIN/vault-client" -c "$conf" get big.bin -o "$DIR/back.bin"
        GET_S[$label]+=" $SECS"; GET_C[$label]+=" $CCPU"; GET_N[$label]+=" $NCPU"; GET_R[$label]+=" $RSS"
        cmp "$DIR/big.bin" "$DIR/back.bin" || { echo "$label: GET returned other bytes" >&2; exit 1; }
        rm -f "$DIR/back.bin"
        printf '%-8s run %d GET %6.2f s  client CPU %6.2f s  cluster CPU %6.2f s  bytes match\n' \
            "$label" "$run" "$SECS" "$CCPU" "$NCPU"
        "$BIN/vault-client" -c "$conf" delete big.bin >/dev/null
    done
done

echo
echo "Medians of $RUNS runs, $SIZE_MIB MiB file; MB/s = 10^6 bytes of file data per second of the whole command."
echo
echo "| layout | nodes | PUT s | PUT MB/s | GET s | GET MB/s | stored / file | PUT client CPU s | PUT cluster CPU s | GET client CPU s | GET cluster CPU s | client peak RSS PUT/GET MiB | list s |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
declare -A MPUT MGET
for label in "${LABELS[@]}"; do
    # shellcheck disable=SC2086
    {
        MPUT[$label]=$(median ${PUT_S[$label]})
        MGET[$label]=$(median ${GET_S[$label]})
        st=$(median ${STORED[$label]})
        pc=$(median ${PUT_C[$label]}); pn=$(median ${PUT_N[$label]})
        gc=$(median ${GET_C[$label]}); gn=$(median ${GET_N[$label]})
        pr=$(median ${PUT_R[$label]}); gr=$(median ${GET_R[$label]})
    }
    awk -v l="$label" -v n="${NODES[$label]}" -v b="$BYTES" -v p="${MPUT[$label]}" -v g="${MGET[$label]}" \
        -v st="$st" -v pc="$pc" -v pn="$pn" -v gc="$gc" -v gn="$gn" -v pr="$pr" -v gr="$gr" -v ls="${LIST[$label]}" \
        'BEGIN { printf "| %s | %d | %.2f | %.0f | %.2f | %.0f | %.3fx (%.1f MiB) | %.2f | %.2f | %.2f | %.2f | %.0f / %.0f | %.2f |\n",
                 l, n, p, b / p / 1e6, g, b / g / 1e6, st / b, st / 1048576, pc, pn, gc, gn, pr, gr, ls }'
done
echo
echo "Against classic (time ratio: below 1 is faster):"
for label in "rs 2+2" "rs 4+2"; do
    awk -v l="$label" -v p="${MPUT[$label]}" -v g="${MGET[$label]}" -v cp="${MPUT[classic]}" -v cg="${MGET[classic]}" \
        'BEGIN { printf "  %s: PUT time %.2fx (%.2fx the MB/s), GET time %.2fx (%.2fx the MB/s)\n", l, p / cp, cp / p, g / cg, cg / g }'
done
echo "load average (1/5/15 min): $(cut -d' ' -f1-3 /proc/loadavg)"
