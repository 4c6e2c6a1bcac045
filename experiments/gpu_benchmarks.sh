#!/usr/bin/env bash
# Issue 4's tables on a lent GPU, in one device call: each argument is a benchmark run
#   NAME[:SECONDS[:OVERRIDE,OVERRIDE...]]    (default: the next table to make, CSet9 at the notebook's
#   3000 steps under the discrepancy principle, run on to the end so that each image's metrics hold both the
#   kept outputs (at each restart's t*) and the last step's: $CSET9_DISCREPANCY below; Baboon and F16 ran
#   at 3000 steps without it in the twenty-third session, as cset9_denoise25:540:restarts=2,speed=fast;
#   CSet9 ran as cset9_denoise25:540:trainer.max_steps=1800,restarts=2, two restarts packed per image:
#   the 31.00 dB two-run average and the single-run figures in one sub-run per image, which a later
#   session can carry; benchmark.runs=2 would need each run's float outputs, which do not come back)
# run by experiments/benchmark.py with logger=csv into outputs/bench/<run>/ (<run>: NAME and all the
# overrides; ignored, kept while the machine stays warm: repeating a cut-off command resumes its finished
# images). Its table.md/csv, log and each finished image's config, metrics and baselines go to
# $RESULTS/<run>/ even when the time limit cut it, and come back in results.tar.gz (see gpu_env.sh).
# <label> (benchmark_label.sh: NAME and the overrides that change the restoration, written to
# $RESULTS/<run>/label) is where its images resume from and are filed.
#
# On the development machine, from the repository root, first:
#   bash ../shared/device/wheels.sh && mkdir -p data && cp -r ../shared/datasets/{Set5,Set14,bm3d_color} data/
# then ask the device tool for
#   run(command="bash experiments/gpu_benchmarks.sh", carry=[".whl", "data"], timeout_s=600)
# e.g. with arguments "set5_x4:100:trainer.max_steps=300,jobs_per_gpu=1" "set5_x4:100:trainer.max_steps=300"
# to measure how many jobs per GPU pay. Then unpack what comes back, merging the finished images into
# results/benchmark-progress/: bash experiments/file_results.sh FILES_AT/results.tar.gz results/gpu-<date>-<device>
# A benchmark can span sessions: RESUME_FROM=FOLDER (default results/benchmark-progress, committed, so it
# travels; RESUME_FROM= turns it off) seeds outputs/bench/<run>/images from FOLDER/<label>/images, and
# the images finished there (same config, wherever it ran) are not run again, nor are baselines computed
# there (CBM3D, whose package the device lacks, was computed on the development machine). After the
# call, experiments/file_results.sh merges the archive's finished images (and its table) into FOLDER.
# SMOKE=1 PY=.venv/bin/python bash experiments/gpu_benchmarks.sh   checks the script on a CPU in seconds.
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh" gpu_benchmarks.sh "$@"
source experiments/benchmark_label.sh  # gpu_env.sh went to the repository root
export DIP_DATA=${DIP_DATA:-data}
RESUME_FROM=${RESUME_FROM-results/benchmark-progress}
CSET9_DISCREPANCY=cset9_denoise25:540:restarts=2,speed=fast,early_stop=discrepancy,early_stop.stop=false
[ $# -eq 0 ] && set -- $CSET9_DISCREPANCY

for spec in "$@"; do
  IFS=: read -r name seconds overrides <<< "$spec"
  seconds=${seconds:-300}
  IFS=, read -r -a extra <<< "${overrides:-}"
  if [ -n "${SMOKE:-}" ]; then  # no speed switches: compiling takes minutes on a CPU and fails on 32 px images
    kept=()
    for override in "${extra[@]}"; do [[ $override == speed* ]] || kept+=("$override"); done
    extra=("${kept[@]}" trainer.max_steps=2 data.size=32 "benchmark.images=[$(awk -F'\t' 'NR==2{print $1}' \
      "$DIP_DATA/$(sed -n 's/^  dataset: *//p' "conf/benchmark/$name.yaml")/MANIFEST.tsv")]" trainer.accelerator=cpu)
  fi
  # The run's own folder (two runs of one call, e.g. jobs_per_gpu=1 and 2, never share one) and the label
  # its finished images resume from and are filed under (its file `label`). A smoke run's label never names
  # real sub-runs: it neither resumes them nor, filed, merges into them.
  folder=$(run_name "$name" "$(tr ',' '\n' <<< "$overrides")")${SMOKE:+_smoke}
  label=$(benchmark_label "$name" "$(tr ',' '\n' <<< "$overrides")")${SMOKE:+_smoke}
  # images that would not finish before the limit are not started (the budget's clock starts some 30 s
  # after the process): the call ends with a table of those finished, and a later one does the rest
  extra+=("time_budget_s=$((seconds > 90 ? seconds - 45 : seconds))")
  run_dir=outputs/bench/$folder
  mkdir -p "$RESULTS/$folder" "$run_dir" && echo "$label" > "$RESULTS/$folder/label"
  [ -n "${RESUME_FROM:-}" ] && [ -d "$RESUME_FROM/$label/images" ] && cp -rn "$RESUME_FROM/$label/images" "$run_dir/"
  echo "=== $folder (limit ${seconds}s): benchmark.py benchmark=$name ${extra[*]}"
  limited "$seconds" $PY experiments/benchmark.py "benchmark=$name" logger=csv "hydra.run.dir=$run_dir" "${extra[@]}" \
    > "$RESULTS/$folder/log.txt" 2>&1
  echo "=== $folder exit $?"
  cp "$run_dir"/table.* "$RESULTS/$folder/" 2>/dev/null && cat "$RESULTS/$folder/table.md"
  dest=$(cd "$RESULTS/$folder" && pwd)
  (cd "$run_dir" && find images packs \( -name config.yaml -o -name metrics.json -o -name baselines.json \
    -o -path '*/csv/metrics.csv' \) -print0 2>/dev/null \
    | xargs -0 -r cp --parents -t "$dest")
  archive
done
echo "files in $RESULTS: $(ls "$RESULTS" | tr '\n' ' ')"
