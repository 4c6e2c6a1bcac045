"""experiments/bench.py --quick: every loop runs, bench.json holds the figures, and the framework's
step computes what the clean eager and the official-style loops compute."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra.utils import instantiate

from dip.config import compose_config
from dip.speed import Speed
from tests.conftest import run_cli

BENCH = Path(__file__).resolve().parent.parent / "experiments" / "bench.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_quick_bench_writes_every_figure(bench, tmp_path):
    output = tmp_path / "bench.json"
    threads = torch.get_num_threads()
    try:  # one thread: two oversubscribe a shared CPU badly
        bench.main(["--quick", "--repeats", "1", "--threads", "1", "--clock", "cpu",
                    "--variant", "cl=speed.channels_last=true", "--output", str(output)])
    finally:
        torch.set_num_threads(threads)
    results = json.loads(output.read_text())
    row = results["sizes"]["32"]
    for key in ("framework_ms", "eager_ms", "official_ms", "psnr_framework", "psnr_eager", "psnr_official"):
        assert row[key] > 0, key
    assert "peak_mem_mb" in row and results["device"] and "--quick" in results["command"]
    assert results["clock"] == "cpu"
    # Same seed, same network, same noise: the three loops agree to rounding.
    assert row["psnr_framework"] == pytest.approx(row["psnr_eager"], abs=1e-3)
    assert row["psnr_official"] == pytest.approx(row["psnr_eager"], abs=1e-3)
    # channels_last convolutions round otherwise, and which way depends on the CPU's instruction set
    # (0.014 dB apart on one machine, under 0.01 on another): the same restoration, to rounding
    assert row["loops"]["cl"]["psnr"] == pytest.approx(row["psnr_eager"], abs=0.05)
    # what the untimed first step cost each loop (compiling, on a GPU also cuDNN's autotuning)
    assert all(row["loops"][name]["warmup_s"] > 0 for name in ("framework", "eager", "official", "cl"))
    assert "seconds of the 1 untimed first steps: framework " in bench.table(results)
    # the memory check's estimate beside the peak, for calibrating it on a GPU
    assert row["loops"]["framework"]["memory_estimate_mb"] > 0 and row["loops"]["eager"]["memory_estimate_mb"] is None
    assert "(estimated " in bench.table(results)
    packed = results["packed"]
    assert packed["copies"] == 2 and packed["image_steps_per_s"] > 0 and packed["psnr_packed_average"] > 0
    # restarts=2 through the framework: the packed eager loop's restoration, as fast or faster
    assert packed["framework_packed_ms"] > 0 and packed["framework_throughput_vs_eager"] > 0
    assert packed["psnr_framework_packed_mean"] == pytest.approx(packed["psnr_packed_mean"], abs=1e-3)
    assert packed["psnr_framework_packed_average"] == pytest.approx(packed["psnr_packed_average"], abs=1e-3)
    # a variant is a packed framework loop too (its PSNR is not compared: at 32 px the first Adam steps,
    # nearly sign(gradient), turn channels_last's rounding into visible differences)
    assert packed["variants_throughput_vs_eager"]["cl_packed"] > 0
    assert packed["loops"]["cl_packed"]["psnr_of_average"] > 0  # only restarts > 1 report one
    # files from before the framework's packed step was timed (results/bench-cpu-128.json) still show
    older = {**results, "packed": {key: value for key, value in packed.items() if "framework" not in key}}
    assert "through the framework" in bench.table(results) and "through the framework" not in bench.table(older)
    assert "packed 2 x " in bench.table(older)


def test_operation_count_shows_what_the_trimmed_layers_save(bench, tmp_path, capsys):
    """--count-ops profiles one untimed step of each framework loop: the paper's layers add BatchNorm's
    30 step-counter increments and the accumulation of 25 cancelled conv biases' gradients; one weight
    tensor leaves one accumulation."""
    with pytest.raises(SystemExit):
        bench.main(["--quick", "--warmup", "1", "--count-ops"])
    assert_refused(capsys.readouterr().err, "the profiled step is the last warm-up step")
    output = tmp_path / "bench.json"
    threads = torch.get_num_threads()
    try:
        paper_layers = "paper=speed.conv_bias_before_norm=true,speed.batchnorm_running_stats=true"
        bench.main(["--quick", "--warmup", "2", "--repeats", "1", "--threads", "1", "--pack", "0", "--no-official",
                    "--count-ops", "--variant", paper_layers, "--variant", "one=speed.one_weight_tensor=true",
                    "--output", str(output)])
    finally:
        torch.set_num_threads(threads)
    row = json.loads(output.read_text())["sizes"]["32"]
    trimmed, paper = row["loops"]["framework"], row["loops"]["paper"]
    assert row["host_ops"] == trimmed["host_ops"] > 200  # forward, backward and update of 26 convolutions
    assert paper["host_op_names"]["aten::add_"] - trimmed["host_op_names"].get("aten::add_", 0) == 30
    accumulations = "torch::autograd::AccumulateGrad"
    assert paper["host_op_names"][accumulations] - trimmed["host_op_names"][accumulations] == 25
    assert paper["host_ops"] - trimmed["host_ops"] >= 55
    # one weight tensor: one accumulation (eager, each weight's view costs a view and its backward instead)
    assert row["loops"]["one"]["host_op_names"][accumulations] == 1


@pytest.mark.parametrize("name, kind", [
    ("sm90_xmma_dgrad_implicit_gemm_indexed_tf32f32_tf32f32_f32_nhwckrsc_nchw", "convolution, backward (input)"),
    ("sm90_xmma_wgrad_implicit_gemm_indexed_tf32f32_tf32f32_f32_nhwckrsc_nchw", "convolution, backward (weights)"),
    ("sm90_xmma_fprop_implicit_gemm_tf32f32_tf32f32_f32_nhwckrsc_nchw_tilesize128x128x32", "convolution"),
    ("void cudnn::engines_precompiled::nchwToNhwcKernel<float, float, float, false, true>", "layout conversion"),
    ("triton_per_fused__native_batch_norm_legit_functional_leaky_relu_reflection_pad2d_3", "generated (inductor)"),
    ("void at::native::batch_norm_collect_statistics_kernel<float, float, float, 512>", "batch norm"),
    ("void at::native::(anonymous namespace)::reflection_pad2d_out_kernel<float>", "padding"),
    ("void at::native::upsample_bilinear2d_backward_out_frame<float, float>", "upsampling"),
    ("void at::native::multi_tensor_apply_kernel<FusedAdamMathFunctor<float, 4>>", "optimizer"),
    ("Memset (Device)", "copy, fill, concatenation"),
    ("aten::_slow_conv2d_backward", "convolution, backward"),
    ("aten::mkldnn_convolution", "convolution"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>>", "other"),
])
def test_kernel_kind_from_its_name(bench, name, kind):
    assert bench.kernel_kind(name) == kind


def test_gpu_kernel_profile_sums_device_kernels_only(bench):
    """The CUDA branch of kernel_profile, fed the shape of ``key_averages()`` a GPU profile gives: device
    kernels count (graph replays' too), host events (launch calls, ATen operators) and the device-side
    span of a ``record_function`` range do not, and the CUDA graphs launched are counted apart."""
    def entry(key, count, device, self_device_us=0.0, self_cpu_us=0.0, annotation=False):
        return SimpleNamespace(key=key, count=count, device_type=getattr(torch.autograd.DeviceType, device),
                               self_device_time_total=self_device_us, self_cpu_time_total=self_cpu_us,
                               is_user_annotation=annotation)
    averages = [
        entry("sm90_xmma_fprop_implicit_gemm_tf32f32_tf32f32_f32_nhwckrsc_nchw", 26, "CUDA", 2600.0),
        entry("triton_poi_fused__native_batch_norm_legit_functional_leaky_relu_0", 40, "CUDA", 1400.0),
        entry("sm90_xmma_dgrad_implicit_gemm_indexed_tf32f32_tf32f32_f32", 25, "CUDA", 1000.0),
        entry("cudaGraphLaunch", 2, "CPU", self_cpu_us=30.0),
        entry("aten::convolution", 26, "CPU", self_cpu_us=500.0),
        entry("Optimizer.step#Adam.step", 1, "CUDA", 4500.0, annotation=True),
    ]
    profile = bench.kernel_profile(averages, torch.device("cuda"), top=2)
    assert profile["source"] == "cuda kernels" and profile["ms"] == pytest.approx(5.0)
    assert profile["launches"] == 91 and profile["graph_launches"] == 2
    assert profile["by_kind"] == {"convolution": 2.6, "generated (inductor)": 1.4, "convolution, backward (input)": 1.0}
    assert [name for name, *_ in profile["top"]] == [averages[0].key, averages[1].key]


def test_profiled_step_says_what_its_time_went_to(bench, tmp_path):
    """--profile-kernels: one untimed step of each framework loop, its kernels' (on a CPU, its ATen
    operators') time by kind, which adds up to the step's, and the largest kernels first."""
    output = tmp_path / "bench.json"
    threads = torch.get_num_threads()
    try:
        results = bench.main(["--quick", "--warmup", "2", "--repeats", "1", "--threads", "1", "--pack", "0",
                              "--no-official", "--profile-kernels", "--variant", "cl=speed.channels_last=true",
                              "--output", str(output)])
    finally:
        torch.set_num_threads(threads)
    loops = json.loads(output.read_text())["sizes"]["32"]["loops"]
    for name in ("framework", "cl"):
        kernels = loops[name]["kernels"]
        assert kernels["source"] == "cpu operators" and kernels["graph_launches"] == 0
        assert kernels["launches"] > 300  # 26 convolutions, 30 BatchNorms, ... forward and backward
        assert sum(kernels["by_kind"].values()) == pytest.approx(kernels["ms"], rel=1e-3)
        assert kernels["by_kind"]["convolution"] > 0 and kernels["by_kind"]["batch norm"] > 0
        times = [ms for *_, ms in kernels["top"]]
        assert times == sorted(times, reverse=True) and len(times) == 15
    assert loops["eager"].get("kernels") is None  # the reference loops are not profiled
    assert "framework: one step's cpu operators " in bench.table(results)


def assert_refused(stderr: str, *needles: str) -> None:
    """One line, ``error: ...``, naming the problem: argparse's refusals too, without its usage block."""
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def refuse(bench, capsys, args: list[str]) -> str:
    """``bench.main(args)`` refused, as argparse refuses: exit status 2, before any timing (nothing
    printed on stdout); what it said on stderr."""
    with pytest.raises(SystemExit) as exit_:
        bench.main(args)
    assert exit_.value.code == 2
    printed = capsys.readouterr()
    assert printed.out == ""
    return printed.err


def test_variant_needs_a_name_and_overrides(bench, capsys):
    with pytest.raises(SystemExit):
        bench.parse_variants(["bf16"])
    assert_refused(capsys.readouterr().err, "--variant takes NAME=OVERRIDE")


EARLIER = b'{"figures": "of an earlier run"}\n'


@pytest.mark.parametrize("args, needles", [
    (["--sizes", "32", "0"], ["argument --sizes", ">= 1", "'0'"]),
    (["--sizes", "x"], ["argument --sizes", "'x'"]),
    (["--steps", "0"], ["argument --steps", ">= 1"]),
    (["--warmup", "-1"], ["argument --warmup", ">= 0"]),
    (["--repeats", "0"], ["argument --repeats", ">= 1"]),
    (["--pack", "-1"], ["argument --pack", ">= 0"]),
    (["--pack", "1"], ["--pack 1 packs nothing"]),
    (["--pack-size", "0"], ["argument --pack-size", ">= 1"]),
    (["--threads", "-1"], ["argument --threads", ">= 1"]),
    (["--threads", "0"], ["argument --threads", ">= 1"]),
    (["--sizes", "--pack", "0"], ["nothing to measure"]),
    (["--count-ops", "--warmup", "1"], ["--count-ops", "use --warmup 2 or more"]),
    (["--variant", "eager=seed=1"], ["--variant eager", "built-in loop"]),
    (["--variant", "a=seed=1", "--variant", "a=seed=2"], ["--variant a", "another --variant"]),
    (["arch=nonexistent"], ["override arch=nonexistent: unknown arch 'nonexistent' (choose from: "]),
    (["seed=1", "foo=bar"], ["override foo=bar: foo: no such setting"]),
    (["+folder=/x", "data.path=${folder}/a.png", "foo=bar"], ["override foo=bar: foo: no such setting"]),
    (["trainer.max_step=2"], ["override trainer.max_step=2: trainer.max_step: no such setting (did you mean "
                              "trainer.max_steps?)"]),  # run.py's checks, not Hydra's message
    (["optim.lr=[1"], ["override optim.lr=[1"]),
    (["arch=skip,unet"], ["override arch=skip,unet: unknown arch 'skip,unet'"]),
    (["optim.lr=-1"], ["optim.lr must be a finite number > 0, got -1"]),
    (["seed=${nope}"], ["seed: Interpolation key 'nope' not found"]),
    (["--variant", "x=seed=1,foo=bar"], ["--variant x: override foo=bar: foo: no such setting"]),
])
def test_bad_input_is_refused_in_one_line_before_any_timing(bench, tmp_path, capsys, args, needles):
    """An impossible option or override is refused up front, in one line with exit status 2, and the
    figures of an earlier run in --output stay as they were."""
    output = tmp_path / "bench.json"
    output.write_bytes(EARLIER)
    assert_refused(refuse(bench, capsys, ["--quick", "--output", str(output), *args]), *needles)
    assert output.read_bytes() == EARLIER
    assert [path.name for path in tmp_path.iterdir()] == ["bench.json"]  # no temporary file left either


@pytest.mark.parametrize("where, needles", [
    ("earlier.json/bench.json", ["earlier.json is not a folder"]),
    ("earlier.json/deeper/bench.json", ["earlier.json is not a folder"]),
    ("folder", ["folder is a folder"]),
])
def test_an_unwritable_output_is_refused_before_any_timing(bench, tmp_path, capsys, where, needles):
    (tmp_path / "earlier.json").write_bytes(EARLIER)
    (tmp_path / "folder").mkdir()
    assert_refused(refuse(bench, capsys, ["--quick", "--output", str(tmp_path / where)]), "--output", *needles)
    assert (tmp_path / "earlier.json").read_bytes() == EARLIER
    assert sorted(path.name for path in tmp_path.rglob("*")) == ["earlier.json", "folder"]


@pytest.mark.parametrize("content, needles", [
    (None, ["cannot read it (No such file or directory)"]),
    ("not json", ["not the figures of a bench.py run", "JSONDecodeError"]),
    ("[1, 2]", ["not the figures of a bench.py run", "TypeError"]),
    ('{"date": "today"}', ["not the figures of a bench.py run", "KeyError"]),
    ('{"date": "today", "device": "cpu", "torch": "2", "command": "bench", "sizes": {"32": 5}}',
     ["not the figures of a bench.py run"]),
])
def test_show_refuses_a_file_without_figures(bench, tmp_path, capsys, content, needles):
    shown = tmp_path / "shown.json"
    if content is not None:
        shown.write_text(content)
    assert_refused(refuse(bench, capsys, ["--show", str(shown)]), f"--show {shown}: ", *needles)


@pytest.mark.parametrize("args, needles", [
    (["arch=nonexistent"], ["override arch=nonexistent"]),
    (["task=demosaicing"], ["task=demosaicing: bench.py times the denoising step"]),
    (["--show", "BENCH_DIR"], ["--show", "cannot read it (Is a directory)"]),
])
def test_bad_input_from_the_command_line_gets_one_line(tmp_path, args, needles):
    """As a user runs it: exit status 2, one line, no traceback, the earlier figures kept."""
    output = tmp_path / "bench.json"
    output.write_bytes(EARLIER)
    args = [str(tmp_path) if arg == "BENCH_DIR" else arg for arg in args]
    done = run_cli("--quick", "--output", str(output), *args, script="experiments/bench.py")
    assert done.returncode == 2 and done.stdout == ""
    assert_refused(done.stderr, *needles)
    assert output.read_bytes() == EARLIER


def test_a_failing_loop_costs_only_its_own_figures(bench, tmp_path, capsys):
    """A loop that fails at run time (here the settings check refuses a negative learning rate) is
    recorded with its error; the other loops of the size are still measured and written."""
    output = tmp_path / "bench.json"
    threads = torch.get_num_threads()
    try:
        bench.main(["--quick", "--repeats", "2", "--threads", "1", "--pack", "0", "--no-official",
                    "--variant", "broken=optim.lr=-1", "--output", str(output)])
    finally:
        torch.set_num_threads(threads)
    row = json.loads(output.read_text())["sizes"]["32"]
    broken = row["loops"]["broken"]
    assert "optim.lr must be a finite number > 0" in broken["error"] and "ms" not in broken
    assert len(row["loops"]["framework"]["ms_all"]) == len(row["loops"]["eager"]["ms_all"]) == 2
    assert row["speedup_vs_eager"] > 0 and row["official_ms"] is None
    printed = capsys.readouterr().out
    assert printed.count("broken       repeat") == 1  # not tried again after failing
    assert "broken failed: DipError: optim.lr must be a finite number > 0" in printed


@pytest.mark.parametrize("earlier", [True, False])
def test_a_run_whose_every_loop_fails_is_refused_and_writes_nothing(bench, tmp_path, capsys, monkeypatch, earlier):
    """When no loop finishes a run (a setting that breaks them all at run time), the command is refused
    in one line that says why, with exit status 2, and no file of nulls replaces the earlier figures."""
    def broken(*args, **kwargs):  # as Hydra words a failed instantiation: the cause on the second line
        raise RuntimeError("Error in call to target 'Trainer':\nTypeError(\"unexpected keyword argument 'foo'\")")

    for loop in ("run_framework", "run_eager", "run_official"):
        monkeypatch.setattr(bench, loop, broken)
    output = tmp_path / "bench.json"
    if earlier:
        output.write_bytes(EARLIER)
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--quick", "--repeats", "1", "--output", str(output)])
    assert exit_.value.code == 2
    printed = capsys.readouterr()
    assert "figures in" not in printed.out
    assert_refused(printed.err, "every loop failed", str(output), "left as it was" if earlier else "not written",
                   "framework, eager, official, packed, framework_packed: RuntimeError: Error in call to target "
                   "'Trainer': TypeError(\"unexpected keyword argument 'foo'\")")
    assert [path.name for path in tmp_path.iterdir()] == (["bench.json"] if earlier else [])
    if earlier:
        assert output.read_bytes() == EARLIER


def test_a_loop_s_error_is_recorded_whole_on_one_line(bench):
    """Hydra's first line only names the target it failed to call; the cause comes after it."""
    def broken():
        raise RuntimeError("Error in call to target 'Trainer':\nTypeError('unexpected keyword argument')\n")

    reported = []
    bench.interleave({"broken": broken}, 2, lambda runs, errors: reported.append(dict(errors)))
    assert reported == [{"broken": "RuntimeError: Error in call to target 'Trainer': "
                                   "TypeError('unexpected keyword argument')"}]


def test_step_floor_counts_bytes_written_and_convolution_arithmetic():
    """experiments/step_floor.py: a grouped 3x3 convolution of 4 -> 6 channels in 2 groups does 2 x 9
    multiply-adds per output; views write nothing; the default network at 512 px does the 460 GFLOP per
    step that PAPER.md measured."""
    spec = importlib.util.spec_from_file_location("step_floor", BENCH.parent / "step_floor.py")
    step_floor = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(step_floor)
    generator = torch.nn.Sequential(torch.nn.Conv2d(4, 6, 3, padding=1, groups=2), torch.nn.LeakyReLU(inplace=True),
                                    torch.nn.Flatten())
    written, multiply_adds = step_floor.layer_traffic(generator, (1, 4, 8, 5))
    assert multiply_adds == 6 * 8 * 5 * 2 * 9
    assert written == {"convolution": 6 * 8 * 5 * 4, "leaky_relu_": 6 * 8 * 5 * 4}  # the flattening is a view
    _, module = step_floor.prepare(step_floor.compose_config(["task=denoising", "logger=none", "data.size=512"]))
    _, multiply_adds = step_floor.layer_traffic(module.generator, tuple(module.z.shape))
    assert 3 * 2 * multiply_adds / 1e9 == pytest.approx(465, abs=1)


def test_every_variant_of_the_gpu_session_composes(bench):
    """A misspelt override in experiments/gpu_session.sh would only fail on the lent GPU, in a phase
    that device time was spent on: compose each variant here, with the Speed it instantiates."""
    script = BENCH.parent / "gpu_session.sh"
    printed = subprocess.run(["bash", "-c", 'eval "$(sed -n "/^PAPER_LAYERS=/,/^)$/p" "$0")"; '
                              'printf "%s\\n" "${EXTRA[@]}"', str(script)],
                             capture_output=True, text=True, check=True).stdout
    variants = {}
    for line in printed.splitlines():  # one phase's command each, whose variants' names must differ
        variants |= bench.parse_variants([variant for variant in line.split(";") if variant])
    assert {"paper_layers", "fast", "fast_bf16", "fast_bf16_gather", "traced_gather", "fast_bf16_autotune",
            "fast_gather", "fast_cl", "bf16_cl"} <= variants.keys()
    for name, overrides in variants.items():
        cfg = compose_config(overrides)
        assert isinstance(instantiate(cfg.speed), Speed), name
