#!/usr/bin/env bash
# The soak you can leave running (not CI): a three-node cluster of the
# Maelstrom node and a `seglog serve` side by side, for an hour, under load,
# with `kill -9` every 10 s and the disk taken below the free-space floor
# every minute, on a tmpfs this script mounts (so the machine's own disk is
# never filled). At the end each prints a SOAK line: acknowledged, lost,
# refused, healed; the script fails if either lost anything acknowledged.
#
#   scripts/soak.sh [SECONDS]          # default 3600
#
# Needs root (to mount the tmpfs). Tune with SEGLOG_SOAK_KILL_EVERY_SECS
# (10), SEGLOG_SOAK_DISK_EVERY_SECS (60), SEGLOG_SOAK_SERVE_RATE (200
# produce requests per second), SEGLOG_SOAK_DISK_BYTES (the tmpfs, 1G).
# The full output is kept in target/soak-<date>.log.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-3600}"
case "$secs" in
    '' | *[!0-9]*)
        echo "soak.sh: SECONDS must be a number, not '$secs'" >&2
        exit 2
        ;;
esac
if [ "$(id -u)" != 0 ]; then
    echo "soak.sh: needs root to mount a tmpfs to fill (run with sudo)" >&2
    exit 2
fi
cargo build --release
cargo test --release --test node --no-run
disk="$(mktemp -d /tmp/seglog-soak-XXXXXX)"
mount -t tmpfs -o "size=${SEGLOG_SOAK_DISK_BYTES:-1G}" tmpfs "$disk"
trap 'umount -l "$disk"; rmdir "$disk"' EXIT
mkdir -p target
log="target/soak-$(date -u +%Y%m%dT%H%M%SZ).log"
echo "soak.sh: ${secs} s on a tmpfs at $disk; output in $log" >&2
status=0
SEGLOG_SOAK_SECS="$secs" SEGLOG_SOAK_DISK="$disk" TMPDIR="$disk" \
    cargo test --release --test node soak_with_kills_and_full_disks \
    -- --ignored --nocapture --test-threads 2 >"$log" 2>&1 || status=$?
grep -E '^SOAK |^test .*soak|^workload soak' "$log" || true
if [ "$status" -ne 0 ]; then
    echo "soak.sh: FAILED (exit $status); see $log" >&2
fi
exit "$status"
