"""The optimized sampling path computes the plain path's function: exactly in float32 (folding is exact),
within sampling noise in bf16; its cached snapshot follows the model's weights."""

import copy
import dataclasses
import math
import pickle

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nmflowgan.config import SMALL_REFINER, FlowConfig, ModelConfig, RefinerConfig, small
from nmflowgan.errors import BadInputError
from nmflowgan.metrics.kld import kld_per_patch
from nmflowgan.models.noise_model import NoiseModel
from nmflowgan.models.sampler import Sampler, SamplingOptions

CAMERAS, ISOS = ("IP", "S6"), (100, 800, 3200)
FP32 = SamplingOptions(precision="fp32")


def _config(iso_mode: str, ud: bool = False, sees_clean: bool = True, preserve: bool = True,
            correlation_px: int = 0) -> ModelConfig:
    spec = ("UD|" if ud else "") + "NE|SAL|SDL|CL2|SAL|SDL|CL2"
    return ModelConfig(FlowConfig(spec=spec, conv_features=6, receptive_field_px=5, meta_hidden=6, meta_blocks=1),
                       RefinerConfig(depth=3, width=4, sees_clean=sees_clean, preserve_variance=preserve,
                                     noise_scale=16.0), iso_mode, correlation_px)


def _busy(model: NoiseModel) -> NoiseModel:
    """Moves every weight off its initialization (the refiner starts as the identity, CL as 1, 0)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.2)
    return model.eval()


@settings(max_examples=15, deadline=None)
@given(batch=st.integers(1, 3), height=st.integers(1, 37), width=st.integers(1, 37),
       iso_mode=st.sampled_from(["onehot", "continuous"]), sees_clean=st.booleans(), preserve=st.booleans(),
       channels_last=st.booleans(), fold=st.booleans(), seed=st.integers(0, 2**16),
       correlation_px=st.sampled_from([0, 3]))
def test_fp32_optimized_path_equals_plain(batch, height, width, iso_mode, sees_clean, preserve, channels_last, fold,
                                          seed, correlation_px):
    torch.manual_seed(seed)
    model = _busy(NoiseModel(_config(iso_mode, sees_clean=sees_clean, preserve=preserve,
                                     correlation_px=correlation_px), CAMERAS, ISOS))
    generator = torch.Generator().manual_seed(seed)
    clean = torch.rand(batch, 3, height, width, generator=generator)
    cond = model.encode([CAMERAS[i % 2] for i in range(batch)], [ISOS[i % 3] for i in range(batch)], batch)
    latent = torch.randn(clean.shape, generator=generator)
    sampler = model.sampler(SamplingOptions(precision="fp32", channels_last=channels_last, fold=fold))
    with torch.no_grad():
        pixelwise = model.compose(clean, cond, latent, correlate=False, refine=False)
        refined = model.refiner(pixelwise, clean, cond.features)
    torch.testing.assert_close(sampler.noise(clean, cond, latent, refine=False), pixelwise, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(sampler.refiner(pixelwise, clean, cond.features), refined, rtol=1e-5, atol=1e-4)
    with torch.no_grad():
        full = model.compose(clean, cond, latent)
    torch.testing.assert_close(sampler.noise(clean, cond, latent), full, rtol=1e-5, atol=1e-3)


def test_dequantizing_flow_gives_integer_noise_like_plain():
    model = _busy(NoiseModel(_config("continuous", ud=True), CAMERAS, ISOS))
    clean = torch.randint(0, 256, (2, 3, 32, 32)).float() / 255.0
    cond = model.encode("S6", 800, 2)
    plain = model.draw(clean, cond, torch.Generator().manual_seed(4), options=SamplingOptions.plain())
    fast = model.draw(clean, cond, torch.Generator().manual_seed(4), options=FP32)
    assert (fast - fast.round()).abs().max() < 1e-3  # 8-bit levels (clean * 255 is integer up to rounding)
    same = ((fast - plain).abs() < 1e-3).float().mean()
    assert same > 0.999  # float32 reassociation may move a floor() boundary at a rare pixel


def _fit_flow(model: NoiseModel, steps: int) -> None:
    """Fits the flow to quantized heteroscedastic noise (std sqrt(0.2 * clean_255 + 2))."""
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.flow.parameters(), lr=3e-3)
    first = True
    for _ in range(steps):
        clean, real, cond = _real_noise(model, 16, 16, generator)
        if first:
            model.flow.initialize(real, clean, cond, generator)
            first = False
        loss = -model.flow.latent_and_log_prob(real, clean, cond, generator)[1].mean() / real[0].numel()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _real_noise(model: NoiseModel, batch: int, size: int, generator: torch.Generator):
    clean_255 = torch.randint(0, 256, (batch, 3, size, size), generator=generator).float()
    std = torch.sqrt(0.2 * clean_255 + 2.0)
    noisy = (clean_255 + torch.randn(clean_255.shape, generator=generator) * std).round().clamp(0, 255)
    return clean_255 / 255.0, noisy - clean_255, model.encode("S6", 800, batch)


def test_bf16_samples_are_as_realistic_as_float32():
    """KLD to real noise of bf16 samples equals that of float32 samples within the draws' own spread."""
    torch.manual_seed(0)
    config = dataclasses.replace(small().model, refiner=SMALL_REFINER)
    model = NoiseModel(dataclasses.replace(config, flow=FlowConfig(spec="UD|NE|SAL|SDL|CL2|SAL|SDL|CL2",
                                                                   conv_features=8, meta_hidden=8, meta_blocks=1)),
                       CAMERAS, ISOS)
    _fit_flow(model, 150)
    with torch.no_grad():  # a refiner that does something: it then mixes neighbouring pixels
        for p in model.refiner.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.eval()
    clean, real, cond = _real_noise(model, 64, 32, torch.Generator().manual_seed(7))
    scores = {}
    for name, options in {"fp32": SamplingOptions.plain(), "bf16": SamplingOptions(precision="bf16")}.items():
        scores[name] = torch.tensor([
            float(kld_per_patch(real, model.draw(clean, cond, torch.Generator().manual_seed(seed),
                                                            options=options)).mean())
            for seed in range(8)])
    # two standard errors of the difference of two 8-draw means: what independent draws vary by
    spread = math.sqrt(sum(float(s.var()) / len(s) for s in scores.values()))
    difference = (scores["bf16"].mean() - scores["fp32"].mean()).abs()
    assert difference < 2 * spread, (scores, spread)
    assert scores["fp32"].mean() < 0.05  # the fitted model is close to the real noise at all


def test_sampler_is_reused_while_the_weights_stay_and_rebuilt_when_they_change():
    model = NoiseModel(_config("continuous"), CAMERAS, ISOS)
    first = model.sampler(FP32)
    assert model.sampler(FP32) is first  # no rebuild for repeated draws
    assert model.sampler(SamplingOptions(precision="bf16")).dtype == torch.bfloat16  # other options, other sampler
    first = model.sampler(FP32)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.refiner.last.weight.sum().backward()
    optimizer.step()
    assert model.sampler(FP32) is not first  # an optimizer step
    second = model.sampler(FP32)
    state = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        model.refiner.last.bias.add_(1.0)
    assert model.sampler(FP32) is not second  # an edit in place
    model.load_state_dict(state)
    third = model.sampler(FP32)
    clean, cond, latent = torch.rand(1, 3, 8, 8), model.encode("IP", 100, 1), torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(third.noise(clean, cond, latent), second.noise(clean, cond, latent))


def test_sampler_follows_new_weights():
    model = _busy(NoiseModel(_config("continuous"), CAMERAS, ISOS))
    clean, cond = torch.rand(1, 3, 16, 16), model.encode("IP", 100, 1)
    before = model.draw(clean, cond, torch.Generator().manual_seed(0), options=FP32)
    with torch.no_grad():
        model.refiner.last.bias.add_(3.0)
    after = model.draw(clean, cond, torch.Generator().manual_seed(0), options=FP32)
    plain = model.draw(clean, cond, torch.Generator().manual_seed(0), options=SamplingOptions.plain())
    assert (before - after).abs().max() > 1.0
    assert ((after - plain).abs() < 1e-3).float().mean() > 0.99


def test_model_with_a_sampler_still_pickles_copies_and_saves_only_its_weights(tmp_path):
    model = _busy(NoiseModel(_config("continuous"), CAMERAS, ISOS))
    model.sampler(FP32)
    clean, cond, latent = torch.rand(1, 3, 8, 8), model.encode("IP", 100, 1), torch.randn(1, 3, 8, 8)
    expected = model.draw(clean, cond, latent=latent, options=FP32)
    for clone in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        torch.testing.assert_close(clone.draw(clean, cond, latent=latent, options=FP32), expected)
    assert set(model.state_dict()) == set(NoiseModel(_config("continuous"), CAMERAS, ISOS).state_dict())


def test_sampling_precisions_are_checked_and_set_the_compute_dtype():
    model = NoiseModel(_config("continuous"), CAMERAS, ISOS)
    with pytest.raises(BadInputError, match="fp16 sampling needs a CUDA"):
        Sampler(model, SamplingOptions(precision="fp16"))
    with pytest.raises(BadInputError, match="precision 'int8'"):
        SamplingOptions(precision="int8")
    assert SamplingOptions.named("plain").is_plain and not SamplingOptions().is_plain
    assert Sampler(model, SamplingOptions(precision="bf16")).dtype == torch.bfloat16
    assert Sampler(model, FP32).dtype == torch.float32


def test_sample_uses_the_optimized_path_by_default_and_keeps_plain_available(monkeypatch):
    model = _busy(NoiseModel(_config("continuous", ud=True), CAMERAS, ISOS))
    image = torch.randint(0, 256, (3, 24, 24), dtype=torch.uint8)
    calls = []
    original = Sampler.noise
    monkeypatch.setattr(Sampler, "noise", lambda self, *args, **kwargs: calls.append(self.options) or
                        original(self, *args, **kwargs))
    default = model.sample(image, "S6", 800, generator=torch.Generator().manual_seed(2))
    assert calls == [SamplingOptions()]  # drawn by a Sampler with the default (optimized) options
    plain = model.sample(image, "S6", 800, generator=torch.Generator().manual_seed(2),
                         options=SamplingOptions.plain())
    assert len(calls) == 1  # the plain path is the model's own forward, no Sampler
    assert (default.int() - plain.int()).abs().float().mean() < 0.1  # same latent, same noise up to rounding


@pytest.mark.slow
def test_compiled_refiner_matches_eager():
    model = _busy(NoiseModel(_config("continuous"), CAMERAS, ISOS))
    clean, cond = torch.rand(1, 3, 32, 32), model.encode("IP", 100, 1)
    latent = torch.randn(1, 3, 32, 32)
    eager = Sampler(model, FP32).noise(clean, cond, latent)
    compiled = Sampler(model, dataclasses.replace(FP32, compile=True)).noise(clean, cond, latent)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-3)



def test_cpu_chunks_give_the_same_noise(monkeypatch):
    import nmflowgan.models.sampler as sampler_module

    model = _busy(NoiseModel(_config("onehot"), CAMERAS, ISOS))
    clean, latent = torch.rand(5, 3, 12, 10), torch.randn(5, 3, 12, 10)
    cond = model.encode(["IP", "S6", "IP", "S6", "S6"], [100, 800, 3200, 100, 800], 5)
    sampler = model.sampler(FP32)
    whole = sampler.compose(clean, cond, latent)
    monkeypatch.setattr(sampler_module, "CPU_CHUNK_PX", 2 * 12 * 10)  # chunks of 2, 2 and 1 images
    torch.testing.assert_close(sampler.noise(clean, cond, latent), whole, rtol=1e-6, atol=1e-5)


def test_a_onednn_isa_cap_below_bf16_means_no_native_bf16(monkeypatch):
    """ONEDNN_MAX_CPU_ISA=AVX2 makes an AVX512-BF16 CPU compute as an AVX2 one: the default path then stays in
    float32 instead of emulating bf16."""
    from nmflowgan.models.sampler import has_native_bf16, resolve_dtype

    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert not has_native_bf16(torch.device("cpu"))
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
