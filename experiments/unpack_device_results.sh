#!/usr/bin/env bash
# After a device call of gpu_session.sh or gpu_benchmarks.sh, on the development machine: unpack the
# results.tar.gz it returned into a results folder, and merge each benchmark's finished restorations
# into the progress folder that later calls resume from.
#   bash experiments/unpack_device_results.sh ARCHIVE DEST [PROGRESS]
# e.g. ARCHIVE=/work/.device/2/results.tar.gz, DEST=results/gpu-<date>-<device>-<session>, PROGRESS
# (default results/benchmark-progress). DEST gets the bench-*.json, env-*.txt, log-summary.txt (the logs
# without progress bars), each benchmark's table.md/csv under <label>/, and under <label>/curves/ the PSNR
# curve (the CSV logger's metrics.csv) of each fit the call ran. PROGRESS/<label>/images/<image>/
# gets config.yaml, metrics.json and baselines.json of every image that finished and is not there yet
# (an image already there is kept as it is). Nothing is written when the archive is missing or unreadable.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 ARCHIVE DEST [PROGRESS]" >&2; exit 2; }
archive=$1 dest=$2 progress=${3:-results/benchmark-progress}
unpacked=$(mktemp -d)
trap 'rm -rf "$unpacked"' EXIT
tar xzf "$archive" -C "$unpacked" 2>/dev/null || { echo "error: cannot unpack $archive" >&2; exit 1; }

mkdir -p "$dest"
find "$unpacked" -maxdepth 1 -type f \( -name 'bench-*.json' -o -name 'env-*.txt' \) -exec cp -t "$dest" {} +
# each run's own lines, once: the progress bars redraw with carriage returns
find "$unpacked" -name log.txt | LC_ALL=C sort | xargs -r cat | tr '\r' '\n' \
  | grep -v -e '^Epoch' -e '^Training' -e '^ *$' | awk '!seen[$0]++' > "$dest/log-summary.txt" || true

for images in "$unpacked"/*/images; do
  [ -d "$images" ] || continue
  label=$(basename "$(dirname "$images")")
  mkdir -p "$dest/$label"
  find "$(dirname "$images")" -maxdepth 1 -name 'table.*' -exec cp -t "$dest/$label" {} +
  for image in "$images"/*/; do
    name=$(basename "$image")
    if [ -f "$image/csv/metrics.csv" ]; then  # the PSNR curve of a fit of this call
      mkdir -p "$dest/$label/curves" && cp "$image/csv/metrics.csv" "$dest/$label/curves/$name.csv"
    fi
    target=$progress/$label/images/$name
    [ -f "$image/metrics.json" ] && [ ! -f "$target/metrics.json" ] || continue
    mkdir -p "$target"
    cp -t "$target" "$image"/config.yaml "$image"/metrics.json
    [ -f "$image/baselines.json" ] && [ ! -f "$target/baselines.json" ] && cp -t "$target" "$image/baselines.json"
    echo "merged $label/$name"
  done
done
