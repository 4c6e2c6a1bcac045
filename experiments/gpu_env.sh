# Sourced by the device scripts (gpu_session.sh, gpu_benchmarks.sh): the Python to use, the packages
# the GPU machine lacks (hydra, omegaconf, wandb: wheels fetched beforehand into .whl/ by
# ../shared/device/wheels.sh), the results folder $OUT and its env.txt (date, command, GPU, versions).
# Usage: source experiments/gpu_env.sh SCRIPT_NAME
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
PY=${PY:-python3}
OUT=${OUT:-results/gpu-$(date -u +%Y%m%d)}
mkdir -p "$OUT"
if ! $PY -c "import hydra, omegaconf" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export WANDB_MODE=disabled PYTHONUNBUFFERED=1
{
  date -u +%Y-%m-%dT%H:%M:%SZ
  echo "command: bash experiments/$1 ${*:2}   (git $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv || echo "no nvidia-smi"
  $PY -c "import torch, pytorch_lightning as pl; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'cudnn', torch.backends.cudnn.version(), 'lightning', pl.__version__)"
} > "$OUT/env-${1%.sh}.txt" 2>&1
cat "$OUT/env-${1%.sh}.txt"
