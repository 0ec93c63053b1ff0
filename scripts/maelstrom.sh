#!/usr/bin/env bash
# Runs real Maelstrom's kafka workload against seglog and prints one line
# per run: nodes, nemesis, latency, duration, valid?, msgs-per-op (all and
# servers), availability, and where the run's files are.
#
#   scripts/maelstrom.sh                 the standard set (1, 2, 3, 5 nodes; partitions)
#   scripts/maelstrom.sh ci              what CI runs (5a on 1 node, 5b on 2 nodes)
#   scripts/maelstrom.sh run N NEMESIS LATENCY SECONDS [maelstrom args...]
#                                        one run; NEMESIS is "none" or "partition"
#
# Needs Java 17, gnuplot and graphviz (apt-get install -y gnuplot-nox graphviz)
# and ../shared/maelstrom beside the repository. Exits 1 if any run is not
# valid. MAELSTROM=path overrides the Maelstrom launcher, SEGLOG_BIN the binary,
# KEEP_RUNS=1 keeps the run directories of valid runs too.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
maelstrom=${MAELSTROM:-$(realpath "$repo/../shared/maelstrom/maelstrom")}
bin=${SEGLOG_BIN:-$repo/target/release/seglog}
for tool in gnuplot dot java; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        # Without gnuplot and graphviz every run ends ":valid? :unknown".
        echo "maelstrom.sh: $tool is missing (apt-get install -y gnuplot-nox graphviz; Java 17)" >&2
        exit 1
    fi
done
if [ ! -x "$bin" ]; then
    (cd "$repo" && cargo build --release --locked)
fi
bin=$(realpath "$bin")
failed=0

# One Maelstrom run; prints its line.
run() {
    local nodes=$1 nemesis=$2 latency=$3 seconds=$4
    shift 4
    local dir
    dir=$(mktemp -d "${TMPDIR:-/tmp}/seglog-maelstrom.XXXXXX")
    local args=(test -w kafka --bin "$bin" --node-count "$nodes" --concurrency 2n
        --time-limit "$seconds" --rate 1000 --latency "$latency")
    if [ "$nemesis" != none ]; then
        args+=(--nemesis "$nemesis")
    fi
    args+=("$@")
    # A copy, so a rebuild during the run cannot change the binary under it.
    cp "$bin" "$dir/seglog"
    args[4]="$dir/seglog"
    local status=0
    (cd "$dir" && "$maelstrom" "${args[@]}" >maelstrom.log 2>&1) || status=$?
    local results="$dir/store/latest/results.edn"
    local valid="missing" all="-" servers="-" availability="-"
    if [ -f "$results" ]; then
        # The last :valid? of the file is the verdict of the whole run.
        valid=$(grep -o ':valid? [a-z:]*' "$results" | tail -1 | cut -d' ' -f2)
        all=$(awk '/:net \{:all/ {f=1} f && /:msgs-per-op/ {gsub(/[},]/,""); print $2; exit}' "$results")
        servers=$(awk '/:servers \{/ {f=1} f && /:msgs-per-op/ {gsub(/[},]/,""); print $2; exit}' "$results")
        availability=$(grep -o ':ok-fraction [0-9.E-]*' "$results" | head -1 | cut -d' ' -f2)
    fi
    printf 'nodes=%s nemesis=%s latency=%sms time=%ss valid?=%s msgs-per-op=%s servers=%s availability=%s exit=%s dir=%s\n' \
        "$nodes" "$nemesis" "$latency" "$seconds" "$valid" "$all" "$servers" "$availability" "$status" "$dir"
    if [ "$valid" != true ] || [ "$status" != 0 ]; then
        failed=1
        tail -n 30 "$dir/maelstrom.log" >&2 || true
    elif [ -z "${KEEP_RUNS:-}" ]; then
        rm -rf "$dir"
    fi
}

case "${1:-standard}" in
    ci)
        run 1 none 0 20
        run 2 none 0 20
        ;;
    standard)
        run 1 none 0 20
        run 2 none 0 20
        run 3 none 0 20
        run 5 none 0 20
        run 3 partition 0 20
        run 5 partition 0 20
        run 3 partition 20 60
        run 5 partition 20 60
        ;;
    run)
        shift
        run "$@"
        ;;
    *)
        echo "usage: $0 [standard | ci | run N NEMESIS LATENCY SECONDS [args...]]" >&2
        exit 2
        ;;
esac
exit "$failed"
