#!/usr/bin/env bash
# On the development machine, file what a benchmark run or a device call produced:
#   bash experiments/file_results.sh SOURCE DEST [PROGRESS]
# SOURCE is either the results.tar.gz that a device call of gpu_session.sh or gpu_benchmarks.sh returned,
# or the run folder (hydra.run.dir) of experiments/benchmark.py run here. DEST (e.g. results/gpu-<date>-<device>
# or results/benchmark-cpu-<date>-<label>-<image>) gets the bench-*.json and env-*.txt of a call,
# log-summary.txt (the logs without progress bars), each run's table.md/csv under <run>/, and under
# <run>/curves/ the PSNR curve (the CSV logger's metrics.csv) of each fit it ran (pack-<fit>.csv for a fit of
# several images, images_per_fit; <image>/seed<S>.csv for each of benchmark.runs=N, whose restorations are not
# merged into PROGRESS: they are averaged from their outputs.pt, which it does not keep). PROGRESS (default
# results/benchmark-progress) is where later runs resume from: PROGRESS/<label>/images/<image>/ gets
# config.yaml, metrics.json and baselines.json of every image that finished and is not there yet (an image
# already there is kept as it is, with a note on stderr when this run has another fit of it; from a run
# folder, only an image its table covers or it fitted itself, not one copied
# in from another label's progress that the runner did not reuse), and PROGRESS/<label>/ the table when it
# covers every image of the one there (as a run seeded from PROGRESS/<label>/images does). A device
# run's <run> is its folder (the benchmark and all its overrides) and its label the one its file `label`
# names; a run folder's <run> and label are its benchmark's name followed by the overrides that change the
# restoration (benchmark_label.sh; LABEL=... names it instead), as gpu_benchmarks.sh names its labels.
# Nothing is written from a missing or unreadable SOURCE.
set -euo pipefail
source "$(dirname "$0")/benchmark_label.sh"
[ $# -ge 2 ] || { echo "usage: $0 SOURCE DEST [PROGRESS]" >&2; exit 2; }
source=$1 dest=$2 progress=${3:-results/benchmark-progress}
unpacked=$(mktemp -d)
trap 'rm -rf "$unpacked"' EXIT
if [ -d "$source" ]; then
  [ -d "$source/images" ] && [ -f "$source/.hydra/config.yaml" ] \
    || { echo "error: $source is not a run folder of experiments/benchmark.py (no images/ or .hydra/config.yaml)" >&2; exit 1; }
  name=$(sed -n '/^benchmark:/,/^[^ ]/s/^  name: *//p' "$source/.hydra/config.yaml")
  label=${LABEL:-$(benchmark_label "$name" "$(sed -n "s/^- //p" "$source/.hydra/overrides.yaml")")}
  mkdir "$unpacked/$label"
  ln -s "$(cd "$source" && pwd)/images" "$unpacked/$label/images"
  run_folder=1
  [ -d "$source/packs" ] && ln -s "$(cd "$source" && pwd)/packs" "$unpacked/$label/packs"
  cp -t "$unpacked/$label" "$source"/table.* 2>/dev/null || true
  [ -f "$source/benchmark.log" ] && cp "$source/benchmark.log" "$unpacked/$label/log.txt"
else
  tar xzf "$source" -C "$unpacked" 2>/dev/null || { echo "error: cannot unpack $source" >&2; exit 1; }
fi

table_images() {  # the images a table.csv covers, one per line, sorted (none when there is no table)
  [ ! -f "$1" ] || awk -F, 'NR > 1 && $1 != "mean" {print $1}' "$1" | LC_ALL=C sort
}

mkdir -p "$dest"
find "$unpacked" -maxdepth 1 -type f \( -name 'bench-*.json' -o -name 'env-*.txt' \) -exec cp -t "$dest" {} +
# each run's own lines, once: the progress bars redraw with carriage returns
find "$unpacked" -name log.txt | LC_ALL=C sort | xargs -r cat | tr '\r' '\n' \
  | grep -v -e '^Epoch' -e '^Training' -e '^ *$' | awk '!seen[$0]++' > "$dest/log-summary.txt" || true

for images in "$unpacked"/*/images; do
  [ -d "$images" ] || continue
  run=$(dirname "$images") folder=$(basename "$(dirname "$images")")
  label=$(cat "$run/label" 2>/dev/null || echo "$folder")  # a device run names the label it files under
  mkdir -p "$dest/$folder"
  find "$run" -maxdepth 1 -name 'table.*' -exec cp -t "$dest/$folder" {} +
  covered=$(table_images "$run/table.csv")
  for image in "$images"/*/; do
    name=$(basename "$image")
    if [ -f "$image/csv/metrics.csv" ]; then  # the PSNR curve of a fit of this run
      mkdir -p "$dest/$folder/curves" && cp "$image/csv/metrics.csv" "$dest/$folder/curves/$name.csv"
    fi
    for curve in "$image"/seed*/csv/metrics.csv; do  # benchmark.runs=N: each run's, as <image>/seed<S>.csv
      [ -f "$curve" ] || continue
      seed=$(basename "$(dirname "$(dirname "$curve")")")
      mkdir -p "$dest/$folder/curves/$name" && cp "$curve" "$dest/$folder/curves/$name/$seed.csv"
    done
    target=$progress/$label/images/$name
    if [ ! -f "$image/metrics.json" ]; then
      compgen -G "$image/seed*/metrics.json" > /dev/null \
        && echo "note: not merged $label/$name: its benchmark.runs=N restorations are averaged from their outputs.pt, which $progress does not keep" >&2
      continue
    fi
    if [ -n "${run_folder:-}" ] && [ ! -f "$image/csv/metrics.csv" ] && ! sed 's/\.[^.]*$//' <<< "$covered" | grep -qxF "$name"; then
      echo "note: skipped $name: this run neither fitted it nor tabulated it (finished under other settings?)" >&2
      continue
    fi
    if [ -f "$target/metrics.json" ]; then  # a run seeded from the progress folder reused it: the same file
      cmp -s "$image/metrics.json" "$target/metrics.json" \
        || echo "note: kept $label/$name as it is in $progress; this run's fit of it differs (its config.yaml?)" >&2
      continue
    fi
    mkdir -p "$target"
    cp -t "$target" "$image"/config.yaml "$image"/metrics.json
    [ -f "$image/baselines.json" ] && [ ! -f "$target/baselines.json" ] && cp -t "$target" "$image/baselines.json"
    echo "merged $label/$name"
  done
  for curve in "$run"/packs/*/csv/metrics.csv; do  # the curve of a fit of several images
    [ -f "$curve" ] || continue
    fit=$(basename "$(dirname "$(dirname "$curve")")")
    mkdir -p "$dest/$folder/curves" && cp "$curve" "$dest/$folder/curves/pack-$fit.csv"
  done
  if [ -n "$covered" ] && [ -z "$(LC_ALL=C comm -23 <(table_images "$progress/$label/table.csv") - <<< "$covered")" ]; then
    mkdir -p "$progress/$label" && cp -t "$progress/$label" "$run"/table.md "$run"/table.csv
    echo "table $label: $(wc -l <<< "$covered") images"
  fi
done
