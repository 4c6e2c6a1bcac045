# Sourced by gpu_benchmarks.sh and file_results.sh.
# run_name NAME OVERRIDES: NAME, then every one of the OVERRIDES (one per line), with ,=[] turned into _.
run_name() {
  local joined
  joined=$(tr -d "'\"" <<< "$2" | grep -v '^$' | paste -sd, -) || true
  echo "$1${joined:+_$(tr ',=[]' '____' <<< "$joined")}"
}
# benchmark_label NAME OVERRIDES: the folder under which a benchmark run's finished images are filed and
# resumed (results/benchmark-progress/<label>): the run_name of those OVERRIDES that change the restoration.
# Overrides that only say how a run is spread, sped up or logged, which images it restores and where the data
# are leave it as it is, as the runner's own comparison of sub-runs (dip.benchmark._restoration_key) ignores them
# (of the trainer's settings it compares the steps and the precision alone).
benchmark_label() {
  run_name "$1" "$(tr -d "'\"" <<< "$2" | grep -v -E '^(benchmark|logger|time_budget_s|jobs_per_gpu|cpu_jobs|baseline_jobs|images_per_fit|speed|speed\..*|data\.root|benchmark\.(images|restore)|checkpoint\..*)=' \
    | awk -F= '!/^trainer\./ || $1 == "trainer.max_steps" || $1 == "trainer.precision"')"
}
