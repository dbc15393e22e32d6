#!/usr/bin/env bash
# The source layout: every file of src/ and of the crates the daemon builds from (crates/codec,
# crates/emulators) with its line counts (all lines, and lines before its #[cfg(test)] module)
# and what it imports from which file (`use crate::…`, `use super::…`, another crate's name,
# inline `crate::a::B` paths; comments, strings and test code left out), then the verdict of
# tests/repo/layout.rs: no import cycle between files, no file over 500 lines of non-test code.
#
#   scripts/layout.sh            listing and verdict; exit status 1 when the layout check fails
#   scripts/layout.sh --counts   only the file list with line counts
set -euo pipefail
cd "$(dirname "$0")/.."

out=$(LAYOUT_LISTING=1 cargo test --quiet --test repo \
  no_import_cycle_between_files_and_no_file_over_500_lines_of_non_test_code \
  -- --nocapture 2>&1) && status=0 || status=$?

listing=$(printf '%s\n' "$out" | grep -E '^(src/|crates/|    -> )' || true)
if [ "${1:-}" = "--counts" ]; then
  printf '%s\n' "$listing" | grep -E '^(src|crates)/'
  exit 0
fi
printf '%s\n' "$listing"
echo
if [ "$status" -eq 0 ]; then
  echo "layout: no import cycle between source files, no file over 500 lines of non-test code"
else
  # The check's own report: each cycle with the imports that make it, each file over the limit.
  printf '%s\n' "$out" | sed -n '/^import cycles\|^source files with more,/^stack backtrace\|^note: run with/p' \
    | grep -v '^stack backtrace\|^note: run with'
  echo "layout: FAILED (see above)"
fi
exit "$status"
