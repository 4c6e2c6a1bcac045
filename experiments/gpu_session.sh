#!/usr/bin/env bash
# Issue 5's GPU measurements (all phases: about 16 minutes of limits on an H100, so more than one
# call; each phase has its own time limit and writes its figures as soon as it ends, so a cut-off run
# still returns the earlier ones). The limits come from the first H100 run (results/gpu-20261126-h100).
#
# On the development machine, from the repository root, first fetch the wheels the GPU machine
# lacks (hydra, omegaconf, wandb):   bash ../shared/device/wheels.sh
# then ask the device tool for:       run(command="bash experiments/gpu_session.sh PHASES", carry=[".whl"], timeout_s=600)
# with PHASES whose limits add up to less than the call's 600 s (see the end of this comment)
# and unpack what comes back: bash experiments/file_results.sh FILES_AT/results.tar.gz results/gpu-<date>-<device>
#
# Phases, in order of importance:
#   1. main     256/512/1024 px: framework vs clean eager vs official-style loop, and the framework
#               with the paper's layers (conv biases before BatchNorm, running statistics); bench.json
#               is written after each size
#   1b. packed  8 restarts packed into one network at 256 px (where a single image leaves the GPU
#               launch-bound): the eager loop and the framework (restarts=8; also with speed=fast, whose
#               CUDA graphs take the host out of the step, and with speed=fast under bf16) against one image
#   1c. packed16 the same with 16 restarts (H200, results/gpu-20261204-h200: 8.27x eager's single image
#               under speed=fast and bf16, 4.98x under speed=fast; 8 gave 5.98x under speed=fast)
#   2. memory   2048 px: peak GPU memory (framework default, bf16 + channels_last, eager)
#   3. sync     host-device synchronisations per step of the framework (torch.cuda.set_sync_debug_mode)
#   4. quality  512 px, 1800 steps (the paper's table; its notebook runs 3000): PSNR of the framework
#               (default; speed=fast under bf16 autocast) against the fp32 eager loop, same seed
#               (target: 0.1 dB)
#   5. compile  512 px: speed=fast under bf16 autocast (torch.compile with CUDA graphs over one weight
#               tensor: 6.34 ms on the H200) beside the three loops of main, and the candidates below
# main and compile also profile one untimed step of each framework loop (--profile-kernels): the GPU
# time of its kernels by kind (convolutions, generated, BatchNorm, ...) against the timed ms/step.
# SMOKE=1 PY=.venv/bin/python bash experiments/gpu_session.sh   runs every phase for a few steps on
# 32 px images on a CPU (compile phase skipped), to check the script before spending device time on it.
# Arguments NAME[:SECONDS] run only those phases, in that order, with other time limits, e.g. what the
# nineteenth session left unmeasured, in one call of 450 s of limits (compiling takes 35-75 s per
# variant on a fresh machine; docs/benchmarks.md has the whole plan of a 15-minute session):
#   bash experiments/gpu_session.sh quality:200 compile:250
set -uo pipefail

declare -A LIMIT=([main]=220 [packed]=140 [packed16]=150 [memory]=50 [sync]=30 [quality]=200 [compile]=240)
declare -A ARGS=(
  [main]="--sizes 256 512 1024 --warmup 10 --steps 50 --repeats 2 --pack 0 --count-ops --profile-kernels"
  [packed]="--sizes --warmup 10 --steps 50 --repeats 2 --pack 8 --pack-size 256 --no-official"
  [packed16]="--sizes --warmup 10 --steps 50 --repeats 2 --pack 16 --pack-size 256 --no-official"
  [memory]="--sizes 2048 --warmup 2 --steps 5 --repeats 1 --pack 0 --no-official"
  [sync]="--sizes 256 --warmup 10 --steps 100 --repeats 1 --pack 0 --no-official --sync-check metrics_every=50"
  [quality]="--sizes 512 --warmup 20 --steps 1780 --repeats 1 --pack 0 --no-official"
  [compile]="--sizes 512 --warmup 20 --steps 50 --repeats 1 --pack 0 --profile-kernels"
)
PAPER_LAYERS="paper_layers=speed.conv_bias_before_norm=true,speed.batchnorm_running_stats=true"
FAST_BF16="fast_bf16=speed=fast,trainer.precision=bf16-mixed"
# The traced step as CUDA graphs, its upsamplings' gradients as gathers: without them tracing leaves
# accumulating index_puts, which took 32 of the step's 49 ms (results/gpu-20261128-h200)
TRACED_GATHER="traced_gather=speed.compile=true,speed.compile_backend=cudagraphs,speed.one_weight_tensor=true,speed.gather_upsampling=true"
declare -A EXTRA=(  # variants, whose values hold commas and spaces (channels_last and bf16 at 256-1024
  # px: measured in results/gpu-20261126-h100, no faster in eager mode)
  [main]="$PAPER_LAYERS"
  [packed]="fast=speed=fast;$FAST_BF16"
  [packed16]="fast=speed=fast;$FAST_BF16"
  [memory]="bf16_cl=trainer.precision=bf16-mixed,speed.channels_last=true"
  [quality]="$FAST_BF16"  # speed=fast's fp32 quality: results/gpu-20261126-h100-session7
  # On the H200 (results/gpu-20261128-h200) speed=fast under bf16 took 6.34 ms at 512 px, 4.39x the
  # eager loop, and 87 % of it GPU work; speed=fast 9.13 ms, channels_last added 0.5 ms to bf16, and the
  # traced step took 48 ms. Measured next, fastest candidates first, each beside the plain fast_bf16:
  # the upsamplings' gradients as gathers instead of inductor's scatter-adds, under bf16; the traced
  # step with them (seconds of tracing instead of about a minute of compiling); inductor's autotuning of
  # the convolutions and generated kernels under bf16 (minutes of compiling); the gathers in fp32;
  # fp32 channels_last. Each compiled variant costs about a minute: the limit decides how many run.
  [compile]="$FAST_BF16;fast_bf16_gather=speed=fast,trainer.precision=bf16-mixed,speed.gather_upsampling=true;$TRACED_GATHER;fast_bf16_autotune=speed=fast,trainer.precision=bf16-mixed,speed.compile_mode=max-autotune;fast_gather=speed=fast,speed.gather_upsampling=true;fast_cl=speed=fast,speed.channels_last=true"
)
phase() {  # phase NAME SECONDS: one bench.py run, its log and JSON in $RESULTS
  local name=$1 seconds=$2 variants=() variant
  IFS=';' read -r -a pieces <<< "${EXTRA[$name]:-}"
  for variant in "${pieces[@]}"; do
    [ -n "${SMOKE:-}" ] && [[ $variant == *speed.compile=true* || $variant == *speed=fast* ]] && continue  # minutes on a CPU
    variants+=(--variant "$variant")
  done
  # shellcheck disable=SC2206  # the phase's arguments are words
  local args=(${ARGS[$name]} "${variants[@]}")
  [ -n "${SMOKE:-}" ] && [ "$name" = compile ] && return  # minutes of compiling on a CPU (slow test instead)
  [ -n "${SMOKE:-}" ] && args+=(--quick --sizes 32 --pack-size 32 --warmup 2 --steps 2 --repeats 1 --threads 1) \
    && seconds=$((seconds * 3))
  echo "=== $name (limit ${seconds}s): bench.py ${args[*]}"
  limited "$seconds" $PY experiments/bench.py --output "$RESULTS/bench-$name.json" "${args[@]}" \
    >> "$RESULTS/log.txt" 2>&1
  echo "=== $name exit $?"
}
[ $# -eq 0 ] && set -- main packed memory sync quality compile
names=()
for spec in "$@"; do
  names+=("${spec%%:*}")
  [ -z "${ARGS[${names[-1]}]:-}" ] && { echo "error: unknown phase '${names[-1]}' (${!ARGS[*]})" >&2; exit 2; }
done

source "$(dirname "$0")/gpu_env.sh" gpu_session.sh "$@"
for spec in "$@"; do
  IFS=: read -r name seconds <<< "$spec"
  phase "$name" "${seconds:-${LIMIT[$name]}}"
done

for name in "${names[@]}"; do
  [ -f "$RESULTS/bench-$name.json" ] && $PY experiments/bench.py --show "$RESULTS/bench-$name.json"
done
echo "files in $RESULTS: $(ls "$RESULTS" | tr '\n' ' ')"
