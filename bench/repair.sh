#!/usr/bin/env bash
# Repair after losing a node's disk: store TOTAL_MIB of a user's files
# (large files plus 1,000 small ones), time `check` and `check --verify`,
# then stop DFS2, delete its copy of the user's folder, start it again
# empty, and time `check` (degraded), `repair` and `check --verify`.
#
#   bench/repair.sh [TOTAL_MIB] [LARGE_FILES]      (default 1024 64)
#
# Release binaries, four `vault-node serve` processes on 127.0.0.1, every
# command under /usr/bin/time -v (wall time, client peak RSS); repair's own
# summary gives the copies restored and bytes moved. Stops everything it
# started and removes its temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."
TOTAL_MIB=${1:-1024}
LARGE=${2:-64}
. bench/cluster.sh

python3 - "$DIR/tree" "$TOTAL_MIB" "$LARGE" <<'EOF'
import os, sys
root, total, large = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(f"{root}/large"); os.makedirs(f"{root}/small")
small_bytes = 0
for i in range(1000):
    size = (1 + 31 * i // 999) * 1024
    small_bytes += size
    with open(f"{root}/small/s{i:04}.bin", "wb") as f:
        f.write(os.urandom(size))
each = max(0, total * 1048576 - small_bytes) // large
for i in range(large):
    with open(f"{root}/large/l{i:03}.bin", "wb") as f:
        left = each
        while left:
            n = min(left, 1 << 20)
            f.write(os.urandom(n))
            left -= n
EOF
BYTES=$(du -sb "$DIR/tree" | cut -f1)
echo "vault: $LARGE large files + 1000 small, $((BYTES / 1048576)) MiB"

measure() { # label, expected exit status, command...
    local label=$1 want=$2; shift 2
    local rc=0
    /usr/bin/time -v "$@" 2> "$DIR/time.txt" > "$DIR/cmd.out" || rc=$?
    if [ "$rc" != "$want" ]; then
        echo "$label: exit $rc, expected $want"; cat "$DIR/time.txt" "$DIR/cmd.out"; exit 1
    fi
    awk -F': ' -v l="$label" '
        /Elapsed \(wall clock\)/ { n = split($2, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i] }
        /Maximum resident set size/ { r = $2 }
        END { printf "%-24s %8.2f s  peak RSS %6.1f MiB\n", l, s, r / 1024 }' "$DIR/time.txt"
}

measure "put -r" 0 "${CLIENT[@]}" put -r "$DIR/tree"
measure "check" 0 "${CLIENT[@]}" check
measure "check --verify" 0 "${CLIENT[@]}" check --verify

# DFS2's disk dies: stop it, lose the user's folder, start it empty.
kill "${PIDS[1]}"; wait "${PIDS[1]}" 2>/dev/null || true
LOST=$(du -sb "$DIR/DFS2/alice" | cut -f1)
rm -rf "$DIR/DFS2/alice"
start_node 2 "${PORTS[1]}"
echo "DFS2 lost $((LOST / 1048576)) MiB"

measure "check (degraded)" 1 "${CLIENT[@]}" check
measure "repair" 0 "${CLIENT[@]}" repair
grep -iE "restored|moved|fixed|orphan" "$DIR/cmd.out" || cat "$DIR/cmd.out"
measure "check --verify (after)" 0 "${CLIENT[@]}" check --verify
