#!/bin/bash
# Issue 16's spike, as measured for engine/src/state/twig.rs's table: every
# backend at 10⁶ and 10⁷ accounts, one after another, on a quiet machine.
# Needs ≈ 10 GiB of free disk under $DIR and ≈ 10 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release
B=target/release/int-state-spike
DIR=${DIR:-/tmp/int-state-spike}
OUT=${OUT:-spike-out}
mkdir -p "$OUT"
for n in 1e6 1e7; do
  for b in twig nomt store; do
    blocks=20
    $B --backend $b --accounts $n --blocks $blocks --dir "$DIR" > "$OUT/$b-$n.log" 2>&1
    rm -rf "$DIR"/$b-*
  done
  NOMT_LEAF_CACHE_MIB=4096 $B --backend nomt --accounts $n --blocks 20 --dir "$DIR" > "$OUT/nomt4g-$n.log" 2>&1
  rm -rf "$DIR"/nomt-*
done
tail -qn 1 "$OUT"/*.log
