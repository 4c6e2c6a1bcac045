# Sourced by the device scripts (gpu_session.sh, gpu_benchmarks.sh): the Python to use, the packages
# the GPU machine lacks (hydra, omegaconf, wandb: wheels fetched beforehand into .whl/ by
# ../shared/device/wheels.sh), the folder $RESULTS the figures go to, its env-*.txt (date, command,
# GPU, versions), and `archive`.
# The device tool sets $OUT and returns at most 8 files from it, so there the scripts write into
# $DIP_RESULTS (default /tmp/dip-results) and `archive` packs that into $OUT/results.tar.gz after every
# run and every 30 s during one (a call cut off by its limit keeps the last archive). Without $OUT they
# write into results/gpu-<date>/.
# Usage: source experiments/gpu_env.sh SCRIPT_NAME ARGUMENTS...
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
PY=${PY:-python3}
if [ -n "${OUT:-}" ]; then
  RESULTS=${DIP_RESULTS:-/tmp/dip-results} ARCHIVE=$OUT/results.tar.gz && mkdir -p "$OUT"
else
  RESULTS=results/gpu-$(date -u +%Y%m%d) ARCHIVE=
fi
mkdir -p "$RESULTS"
archive() {
  [ -n "$ARCHIVE" ] || return 0
  tar czf "$ARCHIVE.part" -C "$RESULTS" . 2>/dev/null
  # status 1 is a file that changed while tar read it: a log still being written
  [ $? -le 1 ] && mv "$ARCHIVE.part" "$ARCHIVE"
}
# limited SECONDS COMMAND...: COMMAND under a time limit, archived every 30 s while it runs, so that even
# the device call's own limit leaves the latest figures. SIGKILL follows SIGTERM after $KILL_AFTER
# (default 15) seconds: Lightning defers SIGTERM to the end of the step, and a step that compiles takes
# minutes (the ninth session lost a whole call that way).
limited() {
  local seconds=$1 archiver status
  shift
  # stopped between archives, never within one (the trap waits for tar; `wait` returns at once), and
  # with its sleep, which would otherwise hold the call's output open for up to 30 s
  (trap 'kill $! 2>/dev/null; exit' TERM; while true; do sleep 30 & wait $!; archive; done) &
  archiver=$!
  timeout -k "${KILL_AFTER:-15}" "$seconds" "$@"
  status=$?
  kill "$archiver" 2>/dev/null
  wait "$archiver" 2>/dev/null
  archive
  return $status
}
if ! $PY -c "import hydra, omegaconf" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export WANDB_MODE=disabled PYTHONUNBUFFERED=1
{
  date -u +%Y-%m-%dT%H:%M:%SZ
  # The device's copy of .git can lag behind the tree it runs: the digest of the sources tells.
  echo "command: bash experiments/$1 ${*:2}   (git $(git rev-parse --short HEAD 2>/dev/null || echo '?'), sources \
$(find dip conf experiments run.py -type f \( -name '*.py' -o -name '*.yaml' -o -name '*.sh' \) | LC_ALL=C sort \
| xargs cat | sha256sum | cut -c1-12))"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv || echo "no nvidia-smi"
  $PY -c "import torch, pytorch_lightning as pl; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'cudnn', torch.backends.cudnn.version(), 'lightning', pl.__version__)"
} > "$RESULTS/env-${1%.sh}.txt" 2>&1
cat "$RESULTS/env-${1%.sh}.txt"
