"""Several images of one size restored by one packed fit (``stack_problems``), each copy of the
generator on its own image, starting as a fit of that image alone would."""

from __future__ import annotations

import pytest
import torch

from dip.config import compose_config
from dip.errors import DipError
from dip.metrics import psnr
from dip.pipeline import prepare, run
from dip.problem import problem_from_config, stack_problems
from tests.conftest import make_png

SMALL = ["task=inpainting", "mask=bernoulli", "arch=skip", "logger=none", "data.size=32", "checkpoint.every_n_steps=0",
         "arch.channels_down=[8,8,8,8,8]", "arch.channels_up=[8,8,8,8,8]"]


def configs(tmp_path, sizes=((40, 36), (48, 44)), seeds=(0, 3)):
    """One config per image: its own picture, seed and observation seed (so its own mask)."""
    return [compose_config([*SMALL, f"data.path={make_png(tmp_path / f'{k}.png', w, h, seed=k)}", f"seed={seed}",
                            f"observation_seed={k}"]) for k, ((w, h), seed) in enumerate(zip(sizes, seeds))]


def packed(cfgs):
    problems = [problem_from_config(cfg) for cfg in cfgs]
    return problems, stack_problems(problems, [cfg.data.path for cfg in cfgs])


def test_each_copy_starts_on_its_own_image_as_a_fit_of_it_alone(tmp_path):
    cfgs = configs(tmp_path)
    problems, stacked = packed(cfgs)
    masks = [problem.physics.mask for problem in problems]
    assert not torch.equal(masks[0], masks[1])
    assert torch.equal(stacked.physics.mask, torch.cat(masks)) and stacked.images == 2

    _, module = prepare(cfgs[0], stacked, seeds=[cfg.seed for cfg in cfgs])
    outputs = module.restart_outputs()
    assert outputs.shape == (2, 3, 32, 32)
    terms = module.physics.data_term(outputs, module.observation)
    for k, cfg in enumerate(cfgs):
        _, alone = prepare(cfg)
        torch.testing.assert_close(outputs[k:k + 1], alone.restart_outputs())
        torch.testing.assert_close(terms[k:k + 1], alone.physics.data_term(alone.restart_outputs(), alone.observation))
    torch.testing.assert_close(module.restored(), outputs)  # nothing averaged across images


def test_a_packed_fit_returns_each_image_with_its_own_metrics(tmp_path):
    cfgs = configs(tmp_path)
    _, stacked = packed(cfgs)
    cfg = cfgs[0].copy()
    cfg.trainer.max_steps, cfg.metrics_every = 3, 2
    result = run(cfg, None, stacked, seeds=[c.seed for c in cfgs])
    assert result.restored.shape == (2, 3, 32, 32) and len(result.metrics["psnr"]) == 2
    second = result.image(1)
    assert second.restored.shape == (1, 3, 32, 32) and second.metrics["steps"] == 3
    assert second.metrics["psnr"] == pytest.approx(float(psnr(second.restored, second.ground_truth)), abs=1e-3)
    assert second.metrics["psnr_ema"] == pytest.approx(
        float(psnr(second.restored_ema, second.ground_truth)), abs=1e-3)
    assert result.image(0).metrics["psnr"] != second.metrics["psnr"]


def test_what_cannot_be_packed_is_one_clear_line(tmp_path):
    cfgs = configs(tmp_path)
    smaller = compose_config([*SMALL, "data.size=24", f"data.path={cfgs[1].data.path}"])
    with pytest.raises(DipError, match=r"cannot pack .*1.png with .*0.png: a packed fit restores images of one size"):
        stack_problems([problem_from_config(cfgs[0]), problem_from_config(smaller)], [cfg.data.path for cfg in cfgs])
    _, stacked = packed(cfgs)
    with pytest.raises(DipError, match="restarts=2 does not combine with packing 2 images"):
        prepare(compose_config([*SMALL, "restarts=2"]), stacked)


@pytest.mark.slow
def test_a_packed_fit_traced_over_one_weight_tensor_takes_the_eager_steps(tmp_path):
    """The device plan's packed fits under ``speed.compile`` (Table 1 with ``images_per_fit=4``): the
    traced step over the copies' one weight tensor (CUDA graphs on a GPU, run as traced here: aot_eager) trains
    every image as the eager packed fit does, up to the rounding of the traced backward. With SGD, whose
    steps are linear in the gradient: Adam turns that rounding, in near-zero gradients, into full steps
    (on an AMD CPU four Adam steps moved pixels by 3e-3, four SGD steps by 2e-6)."""
    cfgs = configs(tmp_path)
    _, stacked = packed(cfgs)
    seeds = [cfg.seed for cfg in cfgs]

    def fit(*speed):
        cfg = compose_config([*SMALL, f"data.path={cfgs[0].data.path}", f"seed={cfgs[0].seed}", "trainer.max_steps=4",
                              "optim._target_=torch.optim.SGD", "optim.lr=0.01", "speed.fused_optimizer=false", *speed])
        return run(cfg, None, stacked, seeds=seeds)

    eager = fit()
    traced = fit("speed.compile=true", "speed.compile_backend=aot_eager", "speed.one_weight_tensor=true")
    torch.testing.assert_close(traced.restored, eager.restored, rtol=0, atol=1e-4)
    assert traced.metrics["psnr"] == pytest.approx(eager.metrics["psnr"], abs=1e-3)
    assert traced.metrics["psnr"][0] != traced.metrics["psnr"][1]
