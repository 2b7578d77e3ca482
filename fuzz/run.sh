#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60), starting from the committed seed corpus.
#   fuzz/run.sh [SECONDS] [TARGET...]
# cargo-fuzz needs nightly-only compiler flags (-Z sanitizer=address). On a stable toolchain
# this script sets RUSTC_BOOTSTRAP=1, which lets stable rustc accept them; with a nightly
# toolchain installed, `cargo +nightly fuzz ...` works without it.
# Crashes land in fuzz/artifacts/<target>/; reproduce with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/<file>
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
shift || true
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)
failed=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  # work on a copy so that the committed seeds stay small and reviewed
  work=$(mktemp -d)
  cp -r "seeds/$t/." "$work/" 2>/dev/null || true
  echo "== $t: ${seconds}s"
  if ! cargo fuzz run "$t" "$work" -- -max_total_time="$seconds" -max_len=16384 -timeout=10 \
       -artifact_prefix="artifacts/$t/" 2>&1 | tail -n 3; then
    failed+=("$t")
  fi
  rm -rf "$work"
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: crashes in: ${failed[*]} (see fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} targets ran ${seconds}s each, no crash"
