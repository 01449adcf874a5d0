#!/usr/bin/env bash
# Many small files: recursive PUT, LIST, recursive GET and an unchanged
# re-PUT of a tree of N files, with the real binaries on loopback.
#
#   bench/many_files.sh [N] [MIN_KIB] [MAX_KIB]     (default 5000 1 32)
#   LIST_ONLY=1 bench/many_files.sh 100000 0 0       (LIST of a large vault)
#
# Builds release binaries, starts four `vault-node serve` processes on
# 127.0.0.1 (ports picked by the OS), makes a tree of N files (sizes spread
# evenly between MIN_KIB and MAX_KIB KiB, random bytes, 50 per folder in
# nested folders), and times each command under /usr/bin/time -v: files/s,
# wall time, client peak RSS. Checks the fetched tree byte for byte. When
# restic is installed (`apt-get install restic`), backs up and restores the
# same tree into a local repository in the same run, for comparison.
# Everything it starts, it stops; everything it writes is in one temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-5000}
MIN_KIB=${2:-1}
MAX_KIB=${3:-32}
. bench/cluster.sh

# The tree: N files in folders of 50, two levels deep.
python3 - "$DIR/tree" "$N" "$MIN_KIB" "$MAX_KIB" <<'EOF'
import os, sys
root, n, lo, hi = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
for i in range(n):
    d = os.path.join(root, f"d{i // 2500:02}", f"s{(i // 50) % 50:02}")
    os.makedirs(d, exist_ok=True)
    size = (lo + (hi - lo) * i // max(n - 1, 1)) * 1024 if hi else 0
    with open(os.path.join(d, f"file {i:06}.bin"), "wb") as f:
        f.write(os.urandom(size))
EOF
BYTES=$(du -sb "$DIR/tree" | cut -f1)
echo "tree: $N files, $((BYTES / 1048576)) MiB"

measure() { # label, command...
    local label=$1; shift
    /usr/bin/time -v "$@" 2> "$DIR/time.txt" > "$DIR/cmd.out" || { cat "$DIR/time.txt" "$DIR/cmd.out"; exit 1; }
    local secs rss
    secs=$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i]; print s }' "$DIR/time.txt")
    rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$DIR/time.txt")
    awk -v l="$label" -v n="$N" -v s="$secs" -v r="$rss" \
        'BEGIN { printf "%-22s %7.2f s  %8.0f files/s  peak RSS %6.1f MiB\n", l, s, n / s, r / 1024 }'
}

if [ "${LIST_ONLY:-}" = 1 ]; then
    measure "vault put -r" "${CLIENT[@]}" put -r "$DIR/tree"
    measure "vault list" "${CLIENT[@]}" list
    echo "listed $(wc -l < "$DIR/cmd.out") files"
    # Right after the PUT part of the nodes' files is read from disk; the
    # second LIST shows the steady state.
    measure "vault list (again)" "${CLIENT[@]}" list
    exit 0
fi

measure "vault put -r" "${CLIENT[@]}" put -r "$DIR/tree"
measure "vault list" "${CLIENT[@]}" list
test "$(wc -l < "$DIR/cmd.out")" -eq "$N" || { echo "LIST printed $(wc -l < "$DIR/cmd.out") lines, not $N"; exit 1; }
mkdir "$DIR/back"
measure "vault get -r" "${CLIENT[@]}" get -r tree -o "$DIR/back"
diff -r "$DIR/tree" "$DIR/back/tree" && echo "fetched tree matches byte for byte"
measure "vault put -r (unchanged)" "${CLIENT[@]}" put -r "$DIR/tree"
tail -1 "$DIR/cmd.out"

if command -v restic >/dev/null; then
    export RESTIC_PASSWORD=bench RESTIC_REPOSITORY="$DIR/restic"
    restic init -q
    measure "restic backup" restic backup -q "$DIR/tree"
    measure "restic ls" restic ls -q latest
    mkdir "$DIR/restic-back"
    measure "restic restore" restic restore -q latest --target "$DIR/restic-back"
    measure "restic backup (again)" restic backup -q "$DIR/tree"
else
    echo "restic not installed: no comparison (apt-get install restic)"
fi
node_rss
