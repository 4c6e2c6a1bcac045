# Sourced by gpu_benchmarks.sh and file_results.sh.
# benchmark_label NAME OVERRIDES: the folder under which a benchmark run's finished images are filed and
# resumed (results/benchmark-progress/<label>): NAME, then those of the OVERRIDES (one per line) that change
# the restoration, with ,=[] turned into _. Overrides that only say how a run is spread, sped up or logged
# (dip.benchmark.ORCHESTRATION_KEYS), which images it restores and where the data are leave it as it is, as
# the runner's own comparison of sub-runs (dip.benchmark._restoration_key) ignores them.
benchmark_label() {
  local restoration
  restoration=$(tr -d "'\"" <<< "$2" | grep -v -E -e '^$' -e '^(benchmark|logger|time_budget_s|jobs_per_gpu|cpu_jobs|baseline_jobs|images_per_fit|speed|speed\..*|data\.root|benchmark\.(images|restore)|checkpoint\..*)=' \
    | paste -sd, -) || true
  echo "$1${restoration:+_$(tr ',=[]' '____' <<< "$restoration")}"
}
