#!/usr/bin/env bash
# The storage-migration baseline: a guest with a local disk (512 MiB, 256 MiB
# written) evacuated h1 -> h2 over 50 Mbit/s links by solive, 3 runs per
# write rate (1 and 4 MiB/s written past the fill during the copy), each on a
# fresh testbed, every moved guest checked (running, memory checksum
# unchanged). Then the summary table.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
for w in 1 4; do
  "$repo/mininet/experiment" --topology "$here/disk-50m-w$w.toml" --mode precopy --reserve yes \
    --concurrency 1 --runs 3 --urgency 80 --timeout 900 \
    --solive "${SOLIVE:-$repo/target/debug/solive}" --out "$here/w$w"
done
"$here/summarize.py" | tee "$here/RESULTS.md"
