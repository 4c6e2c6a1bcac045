"""Speed switches and the step's own costs: no host sync per step, cheap NaN-safe backtracking, and
switches that change the speed but not the result."""

import dataclasses
import functools
import math

import pytest
import pytorch_lightning as pl
import torch
from functorch.compile import make_boxed_func
from hydra.utils import instantiate
from torch._dynamo.backends.common import aot_autograd
from torch._dynamo.utils import counters
from torch._inductor.utils import run_and_get_code

from dip.config import compose_config
from dip.errors import DipError
from dip.metrics import psnr
from dip.nets.layers import Upsample
from dip.pipeline import prepare, run
from dip.speed import Speed

SMALL = ["task=denoising", "logger=none", "data.size=32", "arch.channels_down=[8,8,8,8,8]",
         "arch.channels_up=[8,8,8,8,8]"]


def small_config(*overrides):
    return compose_config([*SMALL, *overrides])


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny convolutions gain nothing from a second thread, and a shared CPU makes it thrash."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("restarts", [1, 2])
def test_no_host_sync_between_metric_steps(monkeypatch, restarts):
    """Only the metric steps read device values (Lightning copies ``prog_bar`` metrics to the host
    after every step, so the module must not log with it)."""
    reads = []
    for name in ("item", "__float__", "__bool__", "__int__", "tolist"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            import traceback

            frames = [frame.filename for frame in traceback.extract_stack(limit=12)]
            # on a CPU the optimizer reads its (host-side) step counter; that is no device sync
            if not any("torch/optim" in f or "torch/utils/data" in f for f in frames):
                reads.append(frames)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    steps, every = 36, 18
    run(small_config(f"trainer.max_steps={steps}", f"metrics_every={every}", f"restarts={restarts}"), None)
    # per metric step: three metrics for the progress bar; then the final metrics after the fit
    assert len(reads) < steps, f"{len(reads)} host reads in {steps} steps"


@pytest.mark.parametrize("channels_last", [False, True])
def test_backtracking_restores_the_last_good_weights_even_over_nan(channels_last):
    _, module = prepare(small_config(f"speed.channels_last={channels_last}"))
    module.on_fit_start()
    params = list(module.parameters())

    def snapshot():
        return [p.detach().clone() for p in params]

    def step(loss, change):
        module._remember_or_flag_divergence(torch.tensor(loss))
        with torch.no_grad():  # what the optimizer would do
            for p in params:
                p.copy_(change(p))
        module._roll_back_if_diverged()

    # the loss passed at a step is that of the weights before the step's change
    good = snapshot()
    step(0.01, lambda p: p + 1)  # 20 dB: good, the change is kept
    good = snapshot()
    step(0.01 * 1.1, lambda p: p * 2)  # 19.6 dB: within 5 dB, kept
    assert not torch.equal(params[0], good[0])
    step(math.nan, lambda p: torch.full_like(p, math.nan))  # diverged: back to the last good weights
    assert all(torch.equal(p, g) for p, g in zip(params, good))
    step(0.011 * 10**0.6, lambda p: p + 3)  # 6 dB below the last good fit: rolled back too
    assert all(torch.equal(p, g) for p, g in zip(params, good))


@pytest.mark.parametrize("against", ["last", "best"])
def test_a_slow_slide_is_rolled_back_only_against_the_best_fit(against):
    """A fit that loses 1 dB a step never drops 5 dB from the step before, which the authors' rule
    compares with; against the best fit so far (22 dB), the drop to 16.5 dB is rolled back to the best weights."""
    _, module = prepare(small_config(f"backtrack_against={against}"))
    module.on_fit_start()
    params = list(module.parameters())
    snapshots = []
    for fit_db in (20, 21, 22, 21, 20, 19, 18, 17.5, 16.5):
        snapshots.append([p.detach().clone() for p in params])
        module._remember_or_flag_divergence(torch.tensor(10 ** (-fit_db / 10)))
        with torch.no_grad():  # what the optimizer would do
            for p in params:
                p.add_(1)
        module._roll_back_if_diverged()
    rolled_back = all(torch.equal(p, s) for p, s in zip(params, snapshots[2]))
    assert rolled_back == (against == "best")
    assert int(module.failed_in_a_row) == (against == "best")
    assert float(module.last_good_psnr) == pytest.approx(22 if against == "best" else 16.5, abs=1e-4)


def test_failures_in_a_row_count_until_a_good_step_follows_a_good_step():
    """A good step right after a rollback only re-evaluates the old weights: the count of failures in a
    row (which max_rollbacks bounds) is kept until the next good step, then reset."""
    _, module = prepare(small_config())
    module.on_fit_start()
    counts = []
    for loss in (0.01, math.nan, 0.01, math.nan, math.nan, 0.01, 0.01):
        module._remember_or_flag_divergence(torch.tensor(loss))
        counts.append(int(module.failed_in_a_row))
    assert counts == [0, 1, 1, 2, 3, 3, 0]


class OptimizerStates(pl.Callback):
    """Adam's state after each step (first weight tensor), and whether the step diverged."""

    def __init__(self):
        self.states, self.diverged = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        state = trainer.optimizers[0].state[pl_module.trainable_parameters()[0]]
        self.states.append({name: value.detach().clone() for name, value in state.items()})
        self.diverged.append(bool(pl_module.diverged))


def loss_times_once(monkeypatch, factor: float, call: int = 4) -> None:
    """The denoising data term, multiplied by ``factor`` at its ``call``-th evaluation."""
    from dip.physics import GaussianNoise

    def data_term(self, x, y):
        data_term.calls += 1
        loss = (x - y).square().flatten(1).mean(1)
        return loss * factor if data_term.calls == call else loss

    data_term.calls = 0
    monkeypatch.setattr(GaussianNoise, "data_term", data_term)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("rule", ["drop", "keep", "damp"])
def test_a_diverged_steps_gradient_reaches_the_optimizer_only_under_the_authors_rule(monkeypatch, rule, fused):
    """One step's loss is NaN: kept, its gradient turns Adam's moments into NaN for good (every later
    update diverges); dropped, a fused Adam skips the step (its state is that of the step before) and
    another sees a zero gradient (its moments decay once). ``damp`` has no size to learn from a NaN
    gradient: it drops it."""
    loss_times_once(monkeypatch, math.nan)
    recorder = OptimizerStates()
    run(small_config("trainer.max_steps=5", "max_rollbacks=null", f"diverged_gradient={rule}",
                     f"speed.fused_optimizer={fused}"), None, callbacks=[recorder])
    diverged = recorder.diverged.index(True)
    assert diverged >= 1 and (recorder.diverged.count(True) > 1) == (rule == "keep")  # kept: it diverges again
    before, after = recorder.states[diverged - 1], recorder.states[diverged]
    if rule == "keep":
        assert after["exp_avg"].isnan().any()
    elif fused:
        assert all(torch.equal(after[name], before[name]) for name in ("exp_avg", "exp_avg_sq", "step"))
    else:
        assert torch.allclose(after["exp_avg"], 0.9 * before["exp_avg"])
        assert float(after["step"]) == float(before["step"]) + 1
    assert recorder.states[-1]["exp_avg"].isfinite().all() == (rule != "keep")


class SquaredGradients(OptimizerStates):
    """Also the square of the first weight's gradient as the optimizer is about to see it."""

    def __init__(self):
        super().__init__()
        self.squares = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):  # before the module's own hook
        self.squares.append(pl_module.trainable_parameters()[0].grad.square())


@pytest.mark.parametrize("fused", [True, False])
def test_damp_raises_adams_second_moment_to_a_diverged_steps_squared_gradient(monkeypatch, fused):
    """A finite divergence (the loss 1000x at one step, 30 dB): ``v = max(v, g^2)`` and the step is
    dropped, so the next updates are shorter where that gradient was large; the momentum keeps none
    of it (fused: as it was; otherwise it decays once, as under ``drop``)."""
    loss_times_once(monkeypatch, 1000.0)
    recorder = SquaredGradients()
    run(small_config("trainer.max_steps=5", "max_rollbacks=null", "diverged_gradient=damp",
                     f"speed.fused_optimizer={fused}"), None, callbacks=[recorder])
    diverged = recorder.diverged.index(True)
    assert recorder.diverged.count(True) == 1
    before, after, square = recorder.states[diverged - 1], recorder.states[diverged], recorder.squares[diverged]
    decay = 1.0 if fused else 0.999  # a zero gradient in an unfused Adam decays v once
    torch.testing.assert_close(after["exp_avg_sq"], decay * torch.maximum(before["exp_avg_sq"], square))
    assert (square > before["exp_avg_sq"]).any()  # the raise is there to see
    torch.testing.assert_close(after["exp_avg"], before["exp_avg"] * (1.0 if fused else 0.9))


def same_function(overrides, common=()):
    """Outputs and gradients of the generator as ``overrides`` prepare it, relative to the plain one.

    (Whole fits are no test: Adam turns the rounding noise in near-zero gradients, such as those of
    the conv biases that feed BatchNorm in the paper's layers, into full steps, so trajectories
    part after a few steps.)"""
    _, plain = prepare(small_config(*common))
    _, fast = prepare(small_config(*common, *overrides))
    fast.load_state_dict(plain.state_dict())
    assert_same_function(plain, fast)


def assert_same_function(plain, fast):
    """``fast`` computes ``plain``'s outputs, and the same gradients for each of its own weights."""
    z = plain.z + 0.03 * torch.randn_like(plain.z)
    outputs = [module(z) for module in (plain, fast)]
    for output in outputs:
        (output**2).mean().backward()
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-4, atol=1e-5)
    names = [name for name, _ in fast.named_parameters()]
    grads = [torch.cat([module.get_parameter(name).grad.flatten() for name in names]) for module in (plain, fast)]
    assert (grads[1] - grads[0]).norm() / grads[0].norm() < 1e-3


PAPER_LAYERS = ("speed.conv_bias_before_norm=true", "speed.batchnorm_running_stats=true")
TRIMMED_LAYERS = ("speed.conv_bias_before_norm=false", "speed.batchnorm_running_stats=false")


def test_exact_profile_is_one_override_away():
    """``speed=exact`` builds the paper's layers; its other switches are GPU switches, no-ops on a CPU,
    apart from torch's default Adam instead of the fused one, which rounds otherwise: so with the
    default layers it restores the same image, to rounding (bitwise on some CPUs)."""
    default = run(small_config("trainer.max_steps=4"), None).metrics["psnr"]
    exact = run(small_config("trainer.max_steps=4", "speed=exact", *TRIMMED_LAYERS), None).metrics["psnr"]
    assert exact == pytest.approx(default, abs=1e-3)
    _, exact = prepare(small_config("speed=exact"))
    _, paper = prepare(small_config(*PAPER_LAYERS))
    assert exact.state_dict().keys() == paper.state_dict().keys()


def test_fast_profile_is_cuda_graphs_over_one_weight_tensor():
    """``speed=fast`` changes only how the step runs, so every other switch stays the default's."""
    fast, default = (instantiate(small_config(*profile).speed) for profile in (["speed=fast"], []))
    assert fast == dataclasses.replace(default, compile=True, compile_mode="reduce-overhead", one_weight_tensor=True)


def test_trimmed_layers_compute_the_same_function_with_fewer_weights():
    """The default drops the conv biases that BatchNorm cancels and its running statistics: the
    other weights start the same (the same seed), and the outputs and their gradients agree."""
    _, paper = prepare(small_config(*PAPER_LAYERS))
    _, trimmed = prepare(small_config())
    paper_weights, trimmed_weights = dict(paper.named_parameters()), dict(trimmed.named_parameters())
    assert len(paper_weights) - len(trimmed_weights) == 25 and trimmed_weights.keys() < paper_weights.keys()
    assert not any("running" in key for key in trimmed.state_dict())
    for name, weight in trimmed_weights.items():
        assert torch.equal(weight, paper_weights[name])
    assert_same_function(paper, trimmed)


def test_channels_last_generator_computes_the_same_function():
    same_function(["speed.channels_last=true"])


def test_gather_upsampling_reaches_every_upsampling_and_computes_the_same_function():
    _, module = prepare(small_config("speed.gather_upsampling=true"))
    upsamplings = [m for m in module.modules() if isinstance(m, Upsample)]
    assert len(upsamplings) == 5 and all(m.gather for m in upsamplings)
    same_function(["speed.gather_upsampling=true"])


def test_compiled_gradient_of_a_gathered_upsampling_has_no_scatter():
    """Why the switch exists: inductor compiles the gradient of ``F.interpolate`` to ``index_put``
    (a scatter-add, atomic adds on a GPU), and that of the gathered form without one."""
    def scatters_in_compiled_step(upsample):
        x = torch.randn(1, 4, 8, 8, requires_grad=True)
        loss = torch.compile(lambda x: upsample(x, (16, 16)).square().mean())
        _, kernels = run_and_get_code(lambda: loss(x).backward())
        return sum("index_put" in kernel for kernel in kernels)

    assert [scatters_in_compiled_step(Upsample("bilinear", gather=gather)) for gather in (False, True)] == [1, 0]


def test_traced_gradient_of_a_gathered_upsampling_has_no_index_put():
    """The graphs that ``speed.compile_backend=cudagraphs`` replays (AOT autograd's, no inductor): the
    gradient of ``F.interpolate`` there is four accumulating ``index_put``s per bilinear upsampling,
    which CUDA runs as sorts (20 launches, 32 of the step's 49 ms on an H200); the gathered form has none."""
    def index_puts_in_traced_backward(upsample):
        backward_ops = []
        def record(graph, example_inputs):
            backward_ops.extend(str(node.target) for node in graph.graph.nodes if node.op == "call_function")
            return make_boxed_func(graph)
        backend = aot_autograd(fw_compiler=lambda graph, example_inputs: make_boxed_func(graph), bw_compiler=record)
        x = torch.randn(1, 4, 8, 8, requires_grad=True)
        torch.compile(lambda x: upsample(x, (16, 16)).square().mean(), backend=backend)(x).backward()
        return sum("index_put" in op for op in backward_ops)

    assert [index_puts_in_traced_backward(Upsample("bilinear", gather=gather)) for gather in (False, True)] == [4, 0]


def test_backends_are_restored_after_a_fit():
    before = (torch.backends.cudnn.benchmark, torch.backends.cudnn.conv.fp32_precision)
    with Speed(tf32=False, cudnn_benchmark=not before[0]).backends():
        assert torch.backends.cudnn.conv.fp32_precision == "ieee"
        assert torch.backends.cudnn.benchmark is not before[0]
    assert (torch.backends.cudnn.benchmark, torch.backends.cudnn.conv.fp32_precision) == before


def test_tf32_leaves_the_matmul_precision_readable_by_lightning():
    """Lightning reads torch.get_float32_matmul_precision() when a fit starts on CUDA; it raises if
    the newer per-backend matmul flag was set directly (as a first version of Speed did)."""
    before = torch.get_float32_matmul_precision()
    with Speed(tf32=True).backends():
        assert torch.get_float32_matmul_precision() == "high"
        assert torch.backends.cudnn.conv.fp32_precision == "tf32"
    assert torch.get_float32_matmul_precision() == before


def test_fused_optimizer_only_where_it_exists_and_when_asked():
    weights = [torch.nn.Parameter(torch.zeros(3))]
    assert Speed(fused_optimizer=True).optimizer(torch.optim.Adam)(weights).defaults["fused"]
    assert not Speed(fused_optimizer=False).optimizer(torch.optim.Adam)(weights).defaults.get("fused")
    assert isinstance(Speed().optimizer(torch.optim.LBFGS)(weights), torch.optim.LBFGS)


def test_fused_adam_takes_the_same_steps_as_the_default_one():
    torch.manual_seed(0)
    start, gradients = torch.randn(1000), [torch.randn(1000) for _ in range(5)]
    weights = {}
    for fused in (False, True):
        weight = torch.nn.Parameter(start.clone())
        optimizer = Speed(fused_optimizer=fused).optimizer(functools.partial(torch.optim.Adam, lr=0.01))([weight])
        for gradient in gradients:
            weight.grad = gradient.clone()
            optimizer.step()
        weights[fused] = weight.detach()
    assert not torch.equal(weights[False], start)
    torch.testing.assert_close(weights[True], weights[False], rtol=1e-5, atol=1e-6)


def test_unknown_compile_mode_or_backend_is_refused():
    with pytest.raises(ValueError, match="compile mode"):
        Speed(compile_mode="fastest")
    with pytest.raises(ValueError, match="compile backend 'tvm'"):
        Speed(compile_backend="tvm")
    with pytest.raises(ValueError, match="'reduce-overhead' is inductor's"):  # torch would drop it silently
        Speed(compile_backend="cudagraphs", compile_mode="reduce-overhead")


def test_each_image_size_gets_a_graph_of_its_own():
    """A benchmark worker fits image after image in one process. torch would compile the second size as
    one graph with symbolic sizes for all later ones (2 graphs here), and stop compiling at eight."""
    def step(x):
        return torch.nn.functional.avg_pool2d(x, 2).relu().mean()

    torch._dynamo.reset()
    counters.clear()
    compiled = Speed(compile=True, compile_backend="cudagraphs").compiled(step)
    for size in range(16, 26):
        compiled(torch.randn(1, 3, size, size))
    assert counters["stats"]["unique_graphs"] == 10


@pytest.mark.slow
def test_compiled_generator_computes_the_same_function():
    # three scales, so that every padding reflects: on a CPU (torch 2.13) inductor mis-strides the
    # backward of the replicate fallback that the deepest scales of tiny images use
    same_function(["speed.compile=true"],
                  common=["arch.channels_down=[8,8,8]", "arch.channels_up=[8,8,8]", "arch.channels_skip=[4,4,4]"])


class OptimizerTensors(pl.Callback):
    """What the optimizer updates, and the module's state dict, seen during the fit."""

    def on_train_start(self, trainer, pl_module):
        self.shapes = [tuple(p.shape) for group in trainer.optimizers[0].param_groups for p in group["params"]]
        self.weights = sum(p.numel() for p in pl_module.trainable_parameters())
        self.keys = set(pl_module.state_dict())


@pytest.mark.parametrize("restarts", [1, 2])
def test_one_weight_tensor_takes_the_same_steps(restarts):
    """speed.one_weight_tensor=true: autograd and Adam see one tensor, and the fit (with rollbacks) is
    the default one to the bit with torch's default Adam (the CPU's fused Adam rounds the elements at
    the tails of its vectors its own way, which moves with the tensors' sizes); the state dict keeps
    the generator's own weights."""
    settings = ["trainer.max_steps=8", "optim.lr=0.1", "backtrack_db=0.05", f"restarts={restarts}",
                "speed.fused_optimizer=false"]
    default, one_tensor = OptimizerTensors(), OptimizerTensors()
    expected = run(small_config(*settings), None, callbacks=[default])
    result = run(small_config(*settings, "speed.one_weight_tensor=true"), None, callbacks=[one_tensor])
    assert len(default.shapes) > 20 and one_tensor.shapes == [(one_tensor.weights,)]
    assert one_tensor.keys == default.keys
    assert torch.equal(result.restored, expected.restored) and torch.equal(result.restored_ema, expected.restored_ema)


@pytest.mark.slow
def test_traced_step_over_one_weight_tensor_takes_the_default_steps():
    """The traced step that ``speed.compile_backend=cudagraphs`` replays as CUDA graphs on a GPU, run as
    traced (``aot_eager``, in seconds), trains the one weight tensor to the default fit, up to the
    rounding of the traced backward."""
    settings = ["trainer.max_steps=8", "optim.lr=0.1", "backtrack_db=0.05", "speed.fused_optimizer=false"]
    traced = OptimizerTensors()
    expected = run(small_config(*settings), None)
    result = run(small_config(*settings, "speed.compile=true", "speed.compile_backend=aot_eager",
                              "speed.one_weight_tensor=true"), None, callbacks=[traced])
    assert traced.shapes == [(traced.weights,)]
    torch.testing.assert_close(result.restored, expected.restored, rtol=0, atol=5e-3)
    assert result.metrics["psnr"] == pytest.approx(expected.metrics["psnr"], abs=0.01)


def test_one_weight_tensor_needs_a_fixed_code():
    with pytest.raises(DipError, match="input.optimize=true"):
        prepare(small_config("speed.one_weight_tensor=true", "input.optimize=true"))


def test_weights_become_views_of_one_buffer_in_their_own_layout():
    _, module = prepare(small_config("speed.channels_last=true"))
    before = [p.detach().clone() for p in module.trainable_parameters()]
    module.on_fit_start()
    weights = module.trainable_parameters()
    assert any(w.dim() == 4 and not w.is_contiguous() for w in weights)  # channels_last kept
    assert all(torch.equal(w, b) and w.stride() == b.stride() for w, b in zip(weights, before))
    module.flat_weights.zero_()
    assert not any(w.any() for w in weights)


def test_early_stopping_with_channels_last_weights():
    # Early stopping keeps the best weights as one vector: with NHWC weights that used to fail.
    result = run(small_config("speed.channels_last=true", "trainer.max_steps=12", "early_stop=wmv",
                              "early_stop.window=3", "early_stop.patience=2", "early_stop.check_every=1"), None)
    assert result.metrics["early_stop_step"] is not None


@pytest.mark.parametrize("restarts", [1, 2])
def test_bf16_autocast_runs_on_the_cpu_with_a_float32_average(restarts):
    # The GPU's mixed-precision path, exercised where it can be: bf16 autocast on the CPU.
    _, untrained = prepare(small_config(f"restarts={restarts}"))
    start = float(psnr(untrained.restored(), untrained.ground_truth))
    fp32 = run(small_config("trainer.max_steps=20", f"restarts={restarts}"), None)
    bf16 = run(small_config("trainer.max_steps=20", f"restarts={restarts}", "trainer.precision=bf16-mixed"), None)
    assert bf16.restored_ema.dtype == torch.float32 and torch.isfinite(bf16.restored).all()
    # it trains as fp32 does (about +8 dB in 20 steps); where bf16's rounding lands the 20-step result
    # depends on the CPU's instruction set (1-2 dB either way)
    assert bf16.metrics["psnr"] > start + 5 and fp32.metrics["psnr"] > start + 5
    assert bf16.metrics["psnr"] != fp32.metrics["psnr"]  # autocast did change the arithmetic


def test_bf16_autocast_leaves_the_degradation_and_the_metrics_in_float32():
    """Under bf16 autocast only the generator rounds: the super-resolution downsampler (a convolution,
    which autocast would run in bf16 with a bf16 kernel) gives the data term of the float32 operator,
    and SSIM, whose variances cancel in bf16, is the float32 figure."""
    problem, module = prepare(small_config("task=sr_x4", "data.size=64", "input.reg_noise_std=0"))
    x = module.restart_outputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = module.quality(x)
    exact = module.quality(x)
    for name in ("ssim", "ssim_ema", "psnr_fit", "psnr_fit_ema", "psnr"):
        assert float(autocast[name]) == pytest.approx(float(exact[name]), abs=1e-5), name

    seen = {}

    class DataTerm(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            output = pl_module.latest_output.float()  # the bf16 generator's output
            seen["loss"], seen["float32"] = outputs["loss"], problem.physics.data_term(output, problem.observation)

    run(small_config("task=sr_x4", "data.size=64", "trainer.max_steps=1", "trainer.precision=bf16-mixed",
                     "backtrack_db=null"), None, problem, callbacks=[DataTerm()])
    assert float(seen["loss"]) == pytest.approx(float(seen["float32"].sum()), rel=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("one_weight_tensor", [False, True])
def test_compiled_fit_trains_the_weights_in_one_buffer(one_weight_tensor):
    # The weights become views of one buffer after the generator is compiled: were the compiled step
    # to use other tensors, the optimizer would not move them and the PSNR would stay where it starts.
    # (Not equal to the plain fit: Adam's first steps, about lr * sign(gradient), flip with rounding.)
    three_scales = ["arch.channels_down=[8,8,8]", "arch.channels_up=[8,8,8]", "arch.channels_skip=[4,4,4]",
                    "trainer.max_steps=12"]
    _, untrained = prepare(small_config(*three_scales))
    start = float(psnr(untrained.restored(), untrained.ground_truth))
    plain = run(small_config(*three_scales), None)
    compiled = run(small_config(*three_scales, "speed.compile=true", f"speed.one_weight_tensor={one_weight_tensor}"),
                   None)
    assert plain.metrics["psnr"] > start + 3
    assert compiled.metrics["psnr"] == pytest.approx(plain.metrics["psnr"], abs=1.0)
