#!/usr/bin/env bash
# Fuzz the parsers isthmus wrote itself (fuzz/README.md): build every cargo-fuzz
# target once, then run each for a few seconds on a copy of its committed corpus
# (fuzz/corpus/<target>, never grown by these runs). Fails on any crash, panic,
# timeout or out-of-memory, and prints where the input that caused it was saved.
#
#   scripts/fuzz.sh [seconds-per-target] [target...]     (default: 5, every target)
#
# Needs the nightly toolchain (libFuzzer instrumentation): without it the run fails
# when CI is set and is skipped otherwise. Installs cargo-fuzz when it is missing.
# Environment: ISTHMUS_FUZZ_TARGET_DIR (default ~/.cargo/isthmus-fuzz-target, kept
# between runs so the build is incremental), ISTHMUS_FUZZ_SANITIZER (default none;
# `address` adds AddressSanitizer) and ISTHMUS_FUZZ_CODEGEN_UNITS (default 16: a
# faster build, slightly slower runs). fuzz/README.md has the measured costs.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-5}
shift || true
if ! [[ $seconds =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
  echo "usage: scripts/fuzz.sh [seconds-per-target] [target...]" >&2
  exit 2
fi
all=(client_hello der yaml acme_token route_matcher)
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=("${all[@]}")
fi
# The largest input each target is given: a few ClientHellos, a certificate chain
# with its key, a configuration file (larger ones are legitimately slow to analyze),
# a request line, a request head.
declare -A max_len=([client_hello]=8192 [der]=8192 [yaml]=65536 [acme_token]=1024 [route_matcher]=4096)
for t in "${targets[@]}"; do
  if [ -z "${max_len[$t]:-}" ]; then
    echo "error: unknown fuzz target $t (known: ${all[*]})" >&2
    exit 2
  fi
done

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  if [ -n "${CI:-}" ]; then
    echo "error: the nightly Rust toolchain is missing; the fuzz targets need it (rustup toolchain install nightly)" >&2
    exit 1
  fi
  echo "fuzz: skipped, the nightly Rust toolchain is missing (rustup toolchain install nightly)" >&2
  exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

target_dir=${ISTHMUS_FUZZ_TARGET_DIR:-$HOME/.cargo/isthmus-fuzz-target}
sanitizer=${ISTHMUS_FUZZ_SANITIZER:-none}
codegen_units=${ISTHMUS_FUZZ_CODEGEN_UNITS:-16}
build_flags=(-O -a --sanitizer "$sanitizer" --codegen-units "$codegen_units" --target-dir "$target_dir")
export CARGO_TERM_COLOR=never

# In CI the fuzz crate's own lock file must be up to date (cargo-fuzz has no
# --locked); locally a missing entry is added to it.
if [ -n "${CI:-}" ]; then
  if ! cargo +nightly fetch --locked --manifest-path fuzz/Cargo.toml >/dev/null; then
    echo "error: fuzz/Cargo.lock is out of date; run \`cargo +nightly fetch --manifest-path fuzz/Cargo.toml\` and commit it" >&2
    exit 1
  fi
fi
# Optimized, with debug assertions and overflow checks (the parsers must not
# overflow either).
start=$(date +%s)
cargo +nightly fuzz build "${build_flags[@]}"
echo "fuzz: built in $(($(date +%s) - start))s"
bin_dir="$target_dir/x86_64-unknown-linux-gnu/release"

work=$(mktemp -d "${TMPDIR:-/tmp}/isthmus-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
failed=()
for t in "${targets[@]}"; do
  corpus="$work/corpus/$t"
  artifacts="$PWD/fuzz/artifacts/$t"
  mkdir -p "$corpus" "$artifacts" "$work/tmp/$t"
  cp -R "fuzz/corpus/$t/." "$corpus/"
  log="$work/$t.log"
  echo "fuzz: $t for ${seconds}s"
  status=0
  # TMPDIR: the acme_token target's shared challenge directory lives there.
  TMPDIR="$work/tmp/$t" "$bin_dir/$t" "$corpus" \
    -max_total_time="$seconds" -timeout=25 -rss_limit_mb=2048 \
    -max_len="${max_len[$t]}" -artifact_prefix="$artifacts/" \
    -print_final_stats=1 >"$log" 2>&1 || status=$?
  if [ "$status" -ne 0 ]; then
    failed+=("$t")
    grep -v -E '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse)' "$log" | tail -n 60 || true
    artifact=$(grep -o -E 'Test unit written to [^ ]+' "$log" | sed 's/Test unit written to //' | tail -n 1 || true)
    echo "fuzz: $t FAILED (exit $status)"
    if [ -n "$artifact" ]; then
      echo "fuzz: crash input saved at $artifact"
      echo "fuzz: reproduce with: cargo +nightly fuzz run ${build_flags[*]} $t $artifact"
    fi
  else
    grep -E '^#[0-9]+[[:space:]]+DONE|^stat::number_of_executed_units|^stat::average_exec_per_sec' "$log" |
      sed "s/^/fuzz: $t: /" || true
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: failed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${seconds}s each, no crash"
