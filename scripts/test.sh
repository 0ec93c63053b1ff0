#!/usr/bin/env bash
# The test command: installs what the tests need (scripts/test-setup.sh),
# then runs every test binary with `cargo test --release`, passing on the
# arguments (a binary: `--test storage`; a filter; `-- --nocapture`).
#
# SEGLOG_TEST_TIER=long runs the long scenarios at full size, as CI does;
# without it each runs a shorter version (tests/support/tier.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
# Checked here too, so a mistyped tier fails even a run whose tests do not
# read it.
case "${SEGLOG_TEST_TIER:-short}" in
    short | long | "") ;;
    *)
        echo "test.sh: SEGLOG_TEST_TIER=$SEGLOG_TEST_TIER: the tiers are short (the default) and long" >&2
        exit 2
        ;;
esac
scripts/test-setup.sh
exec cargo test --release "$@"
