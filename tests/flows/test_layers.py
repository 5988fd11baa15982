"""One battery for every flow layer: round trip, log-det against autograd, pixel-wise Jacobian,
conditioning actually used, gradients reach every parameter."""

import pytest
import torch

from nmflowgan.conditions import ConditionSpace
from nmflowgan.config import FlowConfig
from nmflowgan.flows import FlowContext, NoiseFlow
from nmflowgan.flows.flow import build_layer, invert_layers, latent_like

AFFINE = ["SAL", "SDL", "CL2"]
CONDITIONAL = [*AFFINE, "RQS"]  # every layer whose map depends on the clean image or the condition


def _perturb(module: torch.nn.Module, scale: float = 0.3) -> None:
    """Moves every parameter off its (often identity) initialization."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * scale)


def _context(space: ConditionSpace, batch: int = 2, size: tuple[int, int] = (2, 2)) -> FlowContext:
    cameras = [space.cameras[i % len(space.cameras)] for i in range(batch)]
    isos = [space.isos[(i + 1) % len(space.isos)] for i in range(batch)]
    cond = space.encode(cameras, isos).to("cpu", torch.float64)
    clean = torch.rand(batch, 3, *size, dtype=torch.float64)
    return FlowContext(clean, cond)


def _layer(name: str, space: ConditionSpace):
    layer = build_layer(name, FlowConfig(meta_hidden=6, meta_blocks=2), space, 3).double()
    _perturb(layer)
    return layer


def _jacobians(fn, x: torch.Tensor) -> list[torch.Tensor]:
    """The Jacobian of fn at each sample of x, by autograd, as ``(numel, numel)`` matrices."""
    jacobians = []
    for b in range(x.shape[0]):
        jac = torch.autograd.functional.jacobian(lambda v, b=b: fn(v.unsqueeze(0), b), x[b])
        jacobians.append(jac.reshape(x[b].numel(), x[b].numel()))
    return jacobians


@pytest.mark.parametrize("name", CONDITIONAL + ["NE"])
def test_each_layer_inverts_its_forward_map_both_ways_in_float64(name, space):
    layer, ctx = _layer(name, space), _context(space, size=(5, 4))
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64) * (2 if name == "RQS" else 10)  # the spline's own range
    z, logdet = layer(x, ctx)
    back = layer.invert(z, ctx)
    assert z.shape == x.shape and z.dtype == torch.float64
    assert logdet.shape == (2,)
    assert (back - x).abs().max() < 1e-10
    # forward o inverse as well
    again, _ = layer(layer.invert(x, ctx), ctx)
    assert (again - x).abs().max() < 1e-10


@pytest.mark.parametrize("name", CONDITIONAL + ["NE"])
def test_each_layer_round_trips_within_1e4_in_float32(name, space):
    layer = build_layer(name, FlowConfig(), space, 3)
    _perturb(layer)
    cond = space.encode(space.cameras[0], space.isos[0], 2)
    ctx = FlowContext(torch.rand(2, 3, 8, 8), cond)
    x = torch.randn(2, 3, 8, 8) * (2 if name == "RQS" else 30)
    back = layer.invert(layer(x, ctx)[0], ctx)
    assert (back - x).abs().max() < 1e-4


@pytest.mark.parametrize("name", CONDITIONAL + ["NE"])
def test_logdet_matches_autograd_and_is_pixelwise(name, space):
    layer = _layer(name, space)
    for trial in range(3):  # several random conditions and clean images
        torch.manual_seed(trial)
        ctx = _context(space)
        x = torch.randn(2, 3, 2, 2, dtype=torch.float64)

        def forward(v, b, ctx=ctx):
            sub = FlowContext(ctx.clean[b : b + 1], ctx.cond[b : b + 1])
            return layer(v, sub)[0][0]

        jacobians = _jacobians(forward, x)
        _, logdet = layer(x, ctx)
        assert torch.allclose(logdet, torch.stack([torch.linalg.slogdet(j)[1] for j in jacobians]), atol=1e-9)
        for jac in jacobians:  # pixel-wise, in every sample: each value depends on itself alone
            assert (jac - torch.diag(torch.diagonal(jac))).abs().max() == 0
            assert torch.diagonal(jac).abs().min() > 0


def test_uniform_dequantization_round_trip_on_integers(space):
    layer, ctx = build_layer("UD", FlowConfig(), space, 3), _context(space, size=(6, 6))
    x = torch.randint(0, 256, (2, 3, 6, 6)).double()
    y, logdet = layer(x, ctx)
    assert ((y - x) >= 0).all() and ((y - x) < 1).all()
    assert logdet.abs().max() == 0
    assert torch.equal(layer.invert(y, ctx), x)
    assert layer.invert(torch.full((1, 3, 1, 1), 300.0), ctx).max() == 255


@pytest.mark.parametrize("name", CONDITIONAL)
def test_output_depends_on_condition_and_clean(name, space):
    layer = _layer(name, space)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    clean = torch.rand(1, 3, 4, 4, dtype=torch.float64).expand(2, -1, -1, -1)
    cond = space.encode([space.cameras[0], space.cameras[1]], [space.isos[0], space.isos[-1]]).to(
        "cpu", torch.float64)
    z, _ = layer(x[:1].expand(2, -1, -1, -1), FlowContext(clean, cond))
    assert not torch.allclose(z[0], z[1]), "changing camera/ISO must change the output"
    if name != "CL2":  # CL depends on the condition alone
        same = cond[torch.tensor([0, 0])]
        z2, _ = layer(x[:1].expand(2, -1, -1, -1), FlowContext(torch.rand(2, 3, 4, 4).double(), same))
        assert not torch.allclose(z2[0], z2[1]), "changing the clean image must change the output"


@pytest.mark.parametrize("name", CONDITIONAL)
def test_every_parameter_gets_a_finite_gradient(name, space):
    layer = _layer(name, space)
    cells = [(camera, iso) for camera in space.cameras for iso in space.isos]  # every row of a one-hot table
    cond = space.encode([c for c, _ in cells], [i for _, i in cells]).to("cpu", torch.float64)
    ctx = FlowContext(torch.rand(len(cells), 3, 2, 2, dtype=torch.float64), cond)
    x = torch.randn(ctx.clean.shape, dtype=torch.float64)
    z, logdet = layer(x, ctx)
    (z.square().sum() - logdet.sum()).backward()
    for pname, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        if p.dim() > 1 and name == "CL2" and space.iso_mode == "onehot":  # each cell's row of the table
            assert (p.grad.abs().flatten(1).sum(1) > 0).all(), pname
        assert p.grad.abs().sum() > 0, pname


def test_conditional_layers_pass_gradcheck_in_float64(space):
    for name in CONDITIONAL:
        layer, ctx = _layer(name, space), _context(space)
        x = torch.randn(2, 3, 2, 2, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda v, layer=layer, ctx=ctx: layer(v, ctx), (x,))


def _flow_logdet(flow, noisy, ctx):
    """``(z, (B,) log|det J|)`` of the whole flow at ``noisy``."""
    z, log_derivative = flow.transform(noisy, ctx)
    return z, log_derivative.flatten(1).sum(1)


def test_whole_flow_round_trip_and_logdet_is_sum_of_parts(space):
    flow = NoiseFlow(FlowConfig(spec="NE|SAL|SDL|CL2|SAL|SDL|CL2", meta_hidden=6), space).double()
    _perturb(flow)
    ctx = _context(space, size=(2, 2))
    noisy = ctx.clean * 255 + torch.randn(2, 3, 2, 2, dtype=torch.float64) * 5
    z, logdet = _flow_logdet(flow, noisy, ctx)
    back = invert_layers(flow.layers, z, ctx)
    assert (back - noisy).abs().max() < 1e-9
    parts, x = torch.zeros(2, dtype=torch.float64), noisy
    for layer in flow.layers:
        x, ld = layer(x, ctx)
        parts += ld

    def forward(v, b):
        sub = FlowContext(ctx.clean[b : b + 1], ctx.cond[b : b + 1])
        return flow.transform(v, sub)[0][0]

    expected = torch.stack([torch.linalg.slogdet(j)[1] for j in _jacobians(forward, noisy)])
    assert torch.allclose(logdet, parts) and torch.allclose(logdet, expected, atol=1e-9)


def test_whole_flow_with_dequantization_round_trips_integer_images(space):
    flow = NoiseFlow(FlowConfig(), space)
    _perturb(flow, 0.1)
    cond = space.encode(space.cameras[1], space.isos[1], 2)
    clean = torch.randint(0, 256, (2, 3, 9, 7)).float() / 255
    noisy = (clean * 255 + torch.randint(-20, 21, clean.shape)).clamp(0, 255)
    ctx = FlowContext(clean, cond, torch.Generator().manual_seed(1))
    z, _ = flow.transform(noisy, ctx)
    assert torch.equal(invert_layers(flow.layers, z, ctx), noisy)


def test_a_draw_through_the_flow_is_reproducible_and_a_valid_8bit_image(space):
    flow = NoiseFlow(FlowConfig(), space)
    _perturb(flow, 0.1)
    clean = torch.rand(2, 3, 11, 13)
    cond = space.encode(space.cameras[0], space.isos[0], 2)

    def draw(seed):
        latent = latent_like(clean, torch.Generator().manual_seed(seed))
        return invert_layers(flow.layers, latent, FlowContext(clean, cond)) - clean * 255

    a, b, c = draw(3), draw(3), draw(4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    noisy = clean * 255 + a
    assert noisy.min() >= -1e-4 and noisy.max() <= 255 + 1e-4
    assert torch.allclose(noisy, noisy.round(), atol=1e-3)


@pytest.mark.parametrize("fold", [True, False])
@pytest.mark.parametrize("name", CONDITIONAL + ["NE", "UD"])
def test_sampling_copy_inverts_as_the_layer_does(name, space, fold):
    """Each layer's drawing copy (what the sampler composes) computes exactly its inverse."""
    layer = build_layer(name, FlowConfig(meta_hidden=6, meta_blocks=2), space, 3)
    _perturb(layer)
    cond = space.encode([space.cameras[0], space.cameras[-1]], [space.isos[0], space.isos[-1]])
    clean = torch.rand(2, 3, 9, 11)
    z = torch.randn(2, 3, 9, 11) * 20 + 100
    step = layer.for_sampling(torch.float32, torch.contiguous_format, fold)
    with torch.no_grad():
        expected = layer.invert(z, FlowContext(clean, cond))
        got = step.invert(z, FlowContext(clean, cond, compute=clean.clone()))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
    if name == "SDL" and fold:
        assert len(step.pointwise) == len(layer.pointwise) - 2  # one convolution fewer per pixel


def test_the_spline_bends_a_gaussian_into_a_skewed_noise(space):
    """Unlike the affine layers, RQS changes the shape: a Gaussian latent comes out skewed, and the map is the
    identity at initialization and outside its bound."""
    layer = build_layer("RQS", FlowConfig(), space, 3).double()
    ctx = _context(space, size=(64, 64))
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    z, logdet = layer(x, ctx)
    assert torch.allclose(z, x, atol=1e-12) and logdet.abs().max() < 1e-9
    bins = layer.pointwise[-1].bias.numel() // 3 // 3 + 1
    with torch.no_grad():  # equal widths, heights growing from left to right: the slope rises, a skewed map
        layer.pointwise[-1].bias.view(3, 3 * bins - 1)[:, bins : 2 * bins] = torch.linspace(-1.5, 1.5, bins)
    noise = layer.invert(torch.randn(2, 3, 64, 64, dtype=torch.float64), ctx).flatten()
    centred = noise - noise.mean()
    skew = (centred**3).mean() / centred.square().mean() ** 1.5
    assert skew.abs() > 0.1
    far = torch.full((1, 3, 1, 1), 7.0, dtype=torch.float64)
    assert torch.equal(layer(far, _context(space, batch=1, size=(1, 1)))[0], far)


def test_the_spline_is_the_same_function_as_zukos_monotonic_rqs():
    """The spline is computed in a bins-on-axis-2 layout for speed; zuko's implementation is the reference."""
    zuko = pytest.importorskip("zuko")
    from nmflowgan.flows.spline import Spline

    generator = torch.Generator().manual_seed(0)
    raw = torch.randn(2, 3, 23, 9, 7, dtype=torch.float64, generator=generator) * 2
    x = torch.randn(2, 3, 9, 7, dtype=torch.float64, generator=generator) * 3
    ours = Spline(raw, 8, 4.0)
    reference = zuko.transforms.MonotonicRQSTransform(*raw.movedim(2, -1).split((8, 8, 7), -1), bound=4.0)
    y, log_slope = ours(x)
    expected_y, expected_log_slope = reference.call_and_ladj(x)
    torch.testing.assert_close(y, expected_y, rtol=0, atol=1e-12)
    torch.testing.assert_close(log_slope, expected_log_slope, rtol=0, atol=1e-11)
    torch.testing.assert_close(ours.inverse(y), reference.inv(y), rtol=0, atol=1e-11)


@pytest.mark.parametrize("spec", ["NE|CL2", "UD|NE|CL2"])
def test_censored_likelihood_scores_clipped_values_as_the_probability_beyond(spec):
    """With the identity CL2, z = noisy (+ u) - clean * 255. A recorded 0 scores log P(Y < b) = log Phi(z(b)) with
    b = 1 after UD (0 without), a recorded 255 log P(Y >= 255) = log Phi(-z(255)); other values their density."""
    import math

    space = ConditionSpace(("IP",), (100.0,), "continuous")
    flow = NoiseFlow(FlowConfig(spec=spec), space).double()
    clean = torch.tensor([0.0, 1.0, 100 / 255], dtype=torch.float64).view(1, 3, 1, 1)
    noise = torch.zeros(1, 3, 1, 1, dtype=torch.float64)  # noisy 0, 255 and 100
    uniform = torch.full((1, 3, 1, 1), 0.25, dtype=torch.float64)
    cond = space.encode("IP", 100.0).to("cpu", torch.float64)
    censored = flow.latent_and_log_prob(noise, clean, cond, uniform=uniform, censored=True)[1]
    lower = 1.0 if spec.startswith("UD") else 0.0
    u = 0.25 if spec.startswith("UD") else 0.0
    expected = (math.log(0.5 * (1 + math.erf(lower / math.sqrt(2))))  # 0 -> P(Y < b)
                + math.log(0.5)  # 255 -> P(Y >= 255)
                - 0.5 * (u**2 + math.log(2 * math.pi)))  # 100: the density at z = u
    assert censored.item() == pytest.approx(expected, abs=1e-9)
    plain = flow.latent_and_log_prob(noise, clean, cond, uniform=uniform)[1]
    assert plain.item() == pytest.approx(-0.5 * (3 * u**2 + 3 * math.log(2 * math.pi)), abs=1e-9)
