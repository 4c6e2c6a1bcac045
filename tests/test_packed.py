"""Packed generators: N copies of Skip in one network compute exactly what N separate networks do."""

import pytest
import torch

from dip.nets import Skip
from dip.nets.packed import pack_images, pack_state_dicts, unpack_images, unpack_state_dict

SMALL = dict(channels_down=[8, 8, 8], channels_up=[8, 8, 8], channels_skip=[2, 0, 2])


def separate_and_packed(copies, **overrides):
    settings = dict(SMALL, **overrides)
    nets = []
    for seed in range(copies):
        torch.manual_seed(seed)
        nets.append(Skip(in_channels=4, out_channels=3, **settings))
    packed = Skip(in_channels=4, out_channels=3, copies=copies, **settings)
    packed.load_state_dict(pack_state_dicts([net.state_dict() for net in nets]))
    return nets, packed


@pytest.mark.parametrize("overrides", [{}, {"downsample_mode": "lanczos2", "upsample_mode": "nearest", "pad": "zero"}])
def test_packed_forward_backward_and_steps_match_separate_networks(overrides):
    copies = 3
    nets, packed = separate_and_packed(copies, **overrides)
    # SGD: Adam's normalisation would amplify rounding noise in the (zero) gradients of the biases
    # that feed BatchNorm; both act element by element, so per-copy equality carries over.
    optimisers = [torch.optim.SGD(net.parameters(), lr=0.1) for net in nets]
    packed_optimiser = torch.optim.SGD(packed.parameters(), lr=0.1)
    z = torch.rand(copies, 4, 16, 16)
    targets = torch.rand(copies, 3, 16, 16)
    for _ in range(3):  # BatchNorm in training mode, gradients and updates, step after step
        outputs = torch.cat([net(z[k : k + 1]) for k, net in enumerate(nets)])
        packed_outputs = unpack_images(packed(pack_images(z)), copies)
        torch.testing.assert_close(packed_outputs, outputs, rtol=1e-4, atol=1e-5)
        for optimiser in optimisers:
            optimiser.zero_grad()
        sum(torch.nn.functional.mse_loss(output, target) for output, target in zip(outputs, targets)).backward()
        for optimiser in optimisers:
            optimiser.step()
        per_copy = ((packed_outputs - targets) ** 2).flatten(1).mean(1)
        packed_optimiser.zero_grad()
        per_copy.sum().backward()
        packed_optimiser.step()
    for state, net in zip(unpack_state_dict(packed.state_dict(), copies), nets):
        for name, value in net.state_dict().items():
            torch.testing.assert_close(state[name], value, rtol=1e-4, atol=1e-5, msg=name)


def test_state_dicts_round_trip():
    nets, packed = separate_and_packed(2)
    for state, net in zip(unpack_state_dict(packed.state_dict(), 2), nets):
        assert all(torch.equal(state[name], value) for name, value in net.state_dict().items())


def test_one_copy_is_the_plain_network():
    torch.manual_seed(0)
    plain = Skip(in_channels=4, out_channels=3, **SMALL)
    torch.manual_seed(0)
    single = Skip(in_channels=4, out_channels=3, copies=1, **SMALL)
    z = torch.rand(1, 4, 16, 16)
    assert torch.equal(plain(z), single(z))


def test_copies_must_be_positive():
    with pytest.raises(ValueError, match="copies"):
        Skip(in_channels=4, out_channels=3, copies=0, **SMALL)
