"""Fast execution paths (repaint.accel): numerics against float32, and "no change" where nothing should change."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch

from repaint import accel as accel_module
from repaint.accel import REFERENCE, Accel, accelerate, is_noop, unavailable
from repaint.diffusion import Diffusion, DiffusionConfig
from repaint.models import EncoderUNetModel, UNetModel
from repaint.inpainter import unet_model_fn
from repaint.samplers.common import classifier_guidance, make_generators
from repaint.samplers.repaint import repaint
from repaint.schedule import jump_schedule


def _perturbed(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random non-trivial weights everywhere (some output layers start at zero, which would make every test pass)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn(param.shape, generator=gen))
    return model.eval()


@pytest.fixture(scope="module")
def unet() -> UNetModel:
    torch.manual_seed(0)
    net = UNetModel(
        image_size=16, in_channels=3, model_channels=32, out_channels=6, num_res_blocks=1,
        attention_resolutions=(8,), channel_mult=(1, 2), num_head_channels=32, use_scale_shift_norm=True,
        resblock_updown=True,
    )
    return _perturbed(net)


@pytest.fixture(scope="module")
def inputs():
    gen = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, 16, 16, generator=gen), torch.tensor([10, 900])


def _rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out - ref).norm() / ref.norm()).item()


# Relative error ||out - ref|| / ||ref|| of one network call. bfloat16 keeps 8 significand bits, float16 11: on
# random-weight UNets (these, and the official fixtures' unet_s1..s3) bf16 measures 0.8-1.5 %, fp16 0.1-0.2 %.
# The default fast path on CUDA ("auto" -> fp16) is held to the 1e-2; bf16, selectable, to what it can give.
TOLERANCE = {"bf16": 2e-2, "fp16": 1e-2, "reference-fp16": 1e-2}


@torch.no_grad()
@pytest.mark.parametrize("precision", list(TOLERANCE))
def test_reduced_precision_output_close_to_float32(unet, inputs, precision):
    ref = unet(*inputs)
    assert ref.abs().max() > 0.1  # the weights really do something
    out = accelerate(unet, Accel(precision=precision))(*inputs)
    assert out.dtype == torch.float32
    assert _rel(out, ref) <= TOLERANCE[precision]


@torch.no_grad()
def test_accelerate_leaves_the_given_network_untouched(unet, inputs):
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    accelerate(unet, Accel(precision="bf16", channels_last=True))(*inputs)
    accelerate(unet, Accel(precision="reference-fp16"))(*inputs)
    for key, value in unet.state_dict().items():
        assert value.dtype == torch.float32 and value.is_contiguous()
        assert torch.equal(value, before[key]), key


@torch.no_grad()
def test_channels_last_equals_contiguous(unet, inputs):
    out = accelerate(unet, Accel(precision="fp32", channels_last=True))(*inputs)
    assert out.is_contiguous()
    ref = unet(*inputs)  # same maths, other summation orders: within 1e-5 of the output's scale
    assert (out - ref).abs().max() <= 1e-5 * ref.abs().max()


@torch.no_grad()
@pytest.mark.parametrize("accel", [Accel(), REFERENCE], ids=["auto", "reference"])
def test_auto_on_cpu_and_reference_are_plain_eager(unet, inputs, accel):
    assert is_noop(accel, "cpu")
    fast = accelerate(unet, accel, "cpu")
    assert fast is unet
    assert torch.equal(fast(*inputs), unet(*inputs))


@pytest.fixture
def compiler(monkeypatch):
    """Set whether torch.compile "can run" on CUDA (no GPU is needed to resolve a plan)."""
    import repaint.accel

    def set_available(available: bool) -> None:
        monkeypatch.setattr(repaint.accel, "compiler_available", lambda device: available)

    return set_available


def test_auto_on_cuda_is_compiled_fp16_with_graphs_where_a_compiler_runs(compiler):
    cuda = torch.device("cuda")  # a device object only; no GPU needed
    compiler(True)
    assert Accel().resolve(cuda).label() == "fp16+cl+compile+graphs"
    assert Accel(precision="bf16").resolve(cuda).label() == "bf16+cl+compile+graphs"
    assert Accel(precision="fp16", compile=False).resolve(cuda).label() == "fp16"
    assert Accel(compile=False).resolve(cuda).label() == "fp16+graphs"  # eager auto: NCHW (channels-last is slow)
    assert Accel(precision="fp32").resolve(cuda).label() == "fp32"  # fp32 executes like the reference
    assert Accel(precision="reference-fp16").resolve(cuda).label() == "reference-fp16"
    assert REFERENCE.resolve(cuda).label() == "fp32"
    compiler(False)
    assert Accel().resolve(cuda).label() == "fp16+graphs"  # measured 1.22x (batch 8) to 1.25x (batch 1) fp32's speed
    assert Accel(precision="bf16", compile=True).resolve(cuda).label() == "bf16+cl+compile+graphs"  # as asked


def test_auto_on_cpu_changes_nothing_even_where_a_compiler_runs(compiler):
    compiler(True)
    plan = Accel().resolve("cpu")
    assert (plan.precision, plan.channels_last, plan.compile, plan.cuda_graphs) == ("fp32", False, False, False)


@pytest.mark.parametrize("native, cxx, parameters, expected", [
    (True, True, 552_814_086, ("bf16", True, True, False)),     # a 256x256 ADM UNet, AVX512-BF16 or AMX, g++
    (True, False, 552_814_086, ("bf16", True, False, False)),   # the same without a C++ compiler: eager
    (False, True, 552_814_086, ("fp32", False, False, False)),  # without native bf16: emulated bf16 is slower
    (True, True, 5_000_000, ("fp32", False, False, False)),     # a small network (the bundled face model's class)
    (True, True, None, ("fp32", False, False, False)),          # a plain callable: size unknown
])
def test_auto_on_cpu_is_fast_bf16_only_for_large_networks_on_native_bf16(monkeypatch, native, cxx, parameters,
                                                                         expected):
    monkeypatch.setattr(accel_module, "cpu_native_bf16", lambda: native)
    monkeypatch.setattr(accel_module, "cpu_compiler_available", lambda: cxx)
    plan = Accel().resolve("cpu", parameters)
    assert (plan.precision, plan.channels_last, plan.compile, plan.cuda_graphs) == expected
    assert Accel("fp32").resolve("cpu", parameters) == Accel("fp32").resolve("cpu")  # fp32 forced is always fp32
    assert is_noop(Accel("fp32"), "cpu", parameters) and is_noop(Accel.reference(), "cpu", parameters)
    assert Accel("bf16").resolve("cpu", parameters).channels_last  # bf16 on a CPU: channels-last unless told not


def test_auto_on_cpu_converts_a_large_network_only(monkeypatch, unet, inputs):
    monkeypatch.setattr(accel_module, "cpu_native_bf16", lambda: True)
    assert accelerate(unet, Accel(), "cpu") is unet                       # small: untouched, bitwise the same
    monkeypatch.setattr(accel_module, "CPU_AUTO_MIN_PARAMETERS", 1)       # as if it were a 256x256 model
    fast = accelerate(unet, Accel(compile=False), "cpu")                   # (compiled: test_compiled_network_...)
    assert fast is not unet
    with torch.no_grad():
        assert _rel(fast(*inputs), unet(*inputs)) < 2e-2


def test_the_plan_line_of_a_compiled_cpu_call_gives_the_cpu_compile_time(monkeypatch):
    monkeypatch.setattr(accel_module, "cpu_native_bf16", lambda: True)
    monkeypatch.setattr(accel_module, "cpu_compiler_available", lambda: True)
    line = accel_module.execution_summary(Accel(), "cpu", 552_814_086)
    assert line.startswith("bf16+cl+compile") and accel_module.COMPILE_COLD_CPU in line
    assert accel_module.execution_summary(Accel(), "cpu", 5_000_000) == "fp32"


def test_unavailable_names_the_alternative(monkeypatch):
    monkeypatch.setattr(accel_module, "cpu_native_bf16", lambda: False)
    monkeypatch.setattr(accel_module, "cpu_compiler_available", lambda: False)
    assert "use --precision fp32" in unavailable(Accel("bf16"), "cpu")
    assert "C++ compiler" in unavailable(Accel("fp32", compile=True), "cpu")
    assert unavailable(Accel(), "cpu") is None and unavailable(Accel("fp32"), "cpu") is None
    monkeypatch.setattr(accel_module, "cpu_native_bf16", lambda: True)
    monkeypatch.setattr(accel_module, "cpu_compiler_available", lambda: True)
    assert unavailable(Accel("bf16", compile=True), "cpu") is None


def test_auto_without_a_compiler_on_cuda_says_so(compiler, unet):
    from repaint.accel import _GraphedCall

    compiler(False)
    with pytest.warns(UserWarning, match="torch.compile cannot run here.*eagerly in fp16 with CUDA graphs"):
        fast = accelerate(unet, Accel(), "cuda")  # nothing runs on the device until the first call
    assert isinstance(fast, _GraphedCall)  # fp16 eager, replayed as CUDA graphs


def test_bad_settings_are_errors():
    with pytest.raises(ValueError, match="precision"):
        Accel(precision="int8")
    with pytest.raises(ValueError, match="CUDA graphs"):
        accelerate(torch.nn.Identity(), Accel(cuda_graphs=True), "cpu")
    with pytest.raises(TypeError, match="nn.Module"):
        accelerate(lambda x, t: x, Accel(precision="reference-fp16"), "cpu")


@torch.no_grad()
def test_plain_model_callable_gets_autocast_and_float32_output(unet, inputs):
    model = accelerate(unet_model_fn(unet), Accel(precision="bf16"), "cpu")
    out = model(*inputs)
    assert out.dtype == torch.float32
    assert _rel(out, unet(*inputs)) <= TOLERANCE["bf16"]


@torch.no_grad()
def test_bf16_sampling_is_finite_and_keeps_the_known_region_exactly(unet):
    gen = torch.Generator().manual_seed(2)
    gt = torch.rand(2, 3, 16, 16, generator=gen) * 2 - 1
    mask = torch.zeros(2, 1, 16, 16)
    mask[..., :, :8] = 1
    diffusion = Diffusion(DiffusionConfig(timestep_respacing="20"))
    times = jump_schedule(t_T=20, jump_length=5, jump_n_sample=2)
    model = unet_model_fn(accelerate(unet, Accel(precision="bf16")))
    out = repaint(model, diffusion, times, gt, mask, generators=make_generators([0, 1]))
    assert torch.isfinite(out).all()
    known = mask.expand_as(gt).bool()
    assert torch.equal(out[known], gt[known])
    assert not torch.equal(out[~known], gt[~known])


def test_guidance_through_a_bf16_classifier_matches_float32():
    clf = _classifier()
    x, t, y = torch.randn(2, 3, 16, 16), torch.tensor([5, 500]), torch.tensor([1, 3])
    ref = classifier_guidance(clf, y)(x, t)
    fast = accelerate(clf, Accel(precision="bf16"))
    assert not any(p.requires_grad for p in fast.net.parameters())  # only d/dx is computed
    grad = classifier_guidance(fast, y)(x, t)
    assert grad.dtype == torch.float32
    assert _rel(grad, ref) <= 5e-2


def test_inpainter_runs_its_networks_as_accel_says():
    from repaint.inpainter import Inpainter
    from repaint.settings import SamplerSettings
    from repaint.models.config import UNetConfig, build_model

    config = UNetConfig(image_size=16, model_channels=32, num_res_blocks=1, attention_resolutions=(8,),
                        channel_mult=(1, 2), learn_sigma=True, num_head_channels=32)
    torch.manual_seed(0)
    unet = _perturbed(build_model(config))
    default = Inpainter(unet, config)
    assert default._accelerated("unet") is unet  # CPU default: untouched
    fast = Inpainter(unet, config, accel=Accel(precision="bf16"))
    images, masks = torch.rand(1, 3, 16, 16) * 2 - 1, torch.ones(1, 1, 16, 16)
    masks[..., 4:12, 4:12] = 0
    out = fast(images, masks, seeds=[0], settings=SamplerSettings(steps=10, jump_length=5, jump_n_sample=2))
    assert torch.isfinite(out).all() and torch.equal(out[masks.expand_as(out) == 1], images[masks.expand_as(out) == 1])
    assert fast._accelerated("unet") is fast._accelerated("unet")  # converted once


def _classifier() -> EncoderUNetModel:
    torch.manual_seed(0)
    return _perturbed(EncoderUNetModel(
        image_size=16, in_channels=3, model_channels=32, num_classes=5, num_res_blocks=1,
        attention_resolutions=(8,), channel_mult=(1, 2), num_head_channels=32, use_scale_shift_norm=True,
        resblock_updown=True, pool="attention",
    ))


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16", "reference-fp16"])
@pytest.mark.parametrize("which", ["unet", "classifier"])
def test_torch_compile_captures_each_network_in_one_graph(unet, inputs, which, precision):
    """A graph break would split the compiled call (and its CUDA kernels) in pieces, silently: none may appear."""
    net = unet if which == "unet" else _classifier()
    fast = accelerate(net, Accel(precision=precision, channels_last=precision != "fp32"), "cpu")
    torch._dynamo.reset()
    with torch.no_grad():
        report = torch._dynamo.explain(fast)(*inputs)
    torch._dynamo.reset()
    assert (report.graph_count, report.graph_break_count) == (1, 0), report.break_reasons


def test_compiled_network_matches_eager(unet, inputs):
    """torch.compile (inductor, here its CPU code generator) computes the same function."""
    torch._dynamo.reset()
    compiled = accelerate(unet, Accel(precision="fp32", compile=True), "cpu")
    with torch.no_grad():
        ref = unet(*inputs)
        out = compiled(*inputs)
        again = compiled(inputs[0] + 1, inputs[1].flip(0))  # same shapes: no recompilation, new values
        ref_again = unet(inputs[0] + 1, inputs[1].flip(0))
    assert out.dtype == torch.float32
    assert _rel(out, ref) <= 1e-5 and _rel(again, ref_again) <= 1e-5
    torch._dynamo.reset()


def test_freeze_is_a_compiled_mode_with_its_own_label():
    assert Accel("bf16", compile=True, freeze=True).resolve("cpu").label() == "bf16+cl+compile+freeze"
    with pytest.raises(ValueError, match="freeze applies to compiled calls"):
        Accel("bf16", compile=False, freeze=True)
    with pytest.raises(ValueError, match="compile_options, not compile_mode"):
        Accel("bf16", compile=True, freeze=True, compile_mode="max-autotune")


def test_a_frozen_compiled_call_takes_the_weights_as_constants_and_computes_the_same(unet, inputs):
    """Freezing hands oneDNN convolutions with weights packed once (``mkldnn._convolution_pointwise``) instead of
    ``aten.convolution`` on the module's weights; the function stays the eager one, and a call that needs gradients
    (CoPaint differentiates through the network) still gets them."""
    from torch._inductor.utils import run_and_get_code

    torch._dynamo.reset()
    frozen = accelerate(unet, Accel(precision="fp32", compile=True, freeze=True), "cpu")
    with torch.no_grad():
        out, code = run_and_get_code(frozen, *inputs)
        ref = unet(*inputs)
    assert "mkldnn._convolution_pointwise" in "\n".join(code)
    assert _rel(out, ref) <= 1e-5
    x = inputs[0].clone().requires_grad_(True)
    frozen(x, inputs[1]).square().sum().backward()
    x_ref = inputs[0].clone().requires_grad_(True)
    unet(x_ref, inputs[1]).square().sum().backward()
    assert _rel(x.grad, x_ref.grad) <= 1e-4
    torch._dynamo.reset()


def test_compiled_batch_is_dynamic_so_other_batch_sizes_do_not_recompile(unet):
    """Batches of 2 and 3 share one compilation (the last, smaller batch of a run must not recompile); with
    dynamic_batch=False each size compiles on its own. Both compute the eager function."""
    from torch._dynamo.utils import counters

    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3, 3, 16, 16, generator=gen)
    t = torch.tensor([10, 500, 990])
    for dynamic, graphs in ((True, 1), (False, 2)):
        torch._dynamo.reset()
        counters.clear()
        compiled = accelerate(unet, Accel(precision="fp32", compile=True, dynamic_batch=dynamic), "cpu")
        with torch.no_grad():
            for batch in (2, 3):
                assert _rel(compiled(x[:batch], t[:batch]), unet(x[:batch], t[:batch])) <= 1e-5
        assert counters["stats"]["unique_graphs"] == graphs, dynamic
    torch._dynamo.reset()


def test_compiled_code_goes_to_the_repaint_cache_unless_told_otherwise(monkeypatch, tmp_path):
    from repaint.accel import CACHE_ENV, compile_cache_dir

    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setenv("REPAINT_HOME", str(tmp_path))
    assert compile_cache_dir() == tmp_path / "torch-compile"
    accelerate(torch.nn.Linear(2, 2), Accel(precision="fp32", compile=True), "cpu")
    assert os.environ[CACHE_ENV] == str(tmp_path / "torch-compile")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert compile_cache_dir() == tmp_path / "mine"
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    monkeypatch.setenv(CACHE_ENV, default_cache_dir())  # what PyTorch writes there when its compiler is imported
    assert compile_cache_dir() == tmp_path / "torch-compile"


def test_a_failed_automatic_compile_falls_back_to_eager_with_a_warning(monkeypatch, unet, inputs):
    """Where "auto" compiled by itself, a compiler failure costs speed, not the run; an explicit compile raises."""
    from repaint.accel import _Compiled, _Forward

    def broken_compile(fn, **kwargs):
        def call(*args, **kw):
            raise RuntimeError("no working C++ compiler\nsecond line")
        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    plan = Accel(precision="fp32", compile=True).resolve("cpu")
    eager = _Forward(unet, plan, torch.device("cpu"))
    automatic = _Compiled(eager, plan, fallback=eager)
    with torch.no_grad():
        with pytest.warns(UserWarning, match="torch.compile failed .*no working C\\+\\+ compiler second line"):
            out = automatic(*inputs)
        assert torch.equal(out, unet(*inputs))
        assert torch.equal(automatic(*inputs), out)  # no second warning, no second attempt
        with pytest.raises(RuntimeError, match="no working"):
            _Compiled(eager, plan, fallback=None)(*inputs)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_group_norm_for_compile_is_the_same_function(channels_last, dtype):
    from repaint.models.nn import GroupNorm32, GroupNormForCompile

    gen = torch.Generator().manual_seed(4)
    library = GroupNorm32(96)
    with torch.no_grad():
        library.weight.copy_(torch.randn(96, generator=gen))
        library.bias.copy_(torch.randn(96, generator=gen))
    ours = GroupNormForCompile(96)
    ours.load_state_dict(library.state_dict())
    for shape in ((3, 96, 8, 8), (2, 96, 37)):  # a feature map, and attention's [B, C, T]
        x = (torch.randn(*shape, generator=gen) * 3 + 5).to(dtype)  # an offset mean: a one-pass variance would lose it
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        ref, out = library(x), ours(x)
        assert out.dtype == dtype and out.shape == ref.shape
        assert _rel(out.float(), ref.float()) <= (1e-6 if dtype == torch.float32 else 1e-3)


def test_channel_moments_norm_is_swapped_in_only_for_compiled_calls_that_ask(unet, inputs):
    from repaint.accel import _convert
    from repaint.models.nn import GroupNormForCompile

    def swapped(accel: Accel) -> int:
        net = _convert(copy.deepcopy(unet), accel.resolve("cpu"))
        return sum(type(m) is GroupNormForCompile for m in net.modules())

    from repaint.models.nn import GroupNorm32

    norms = sum(type(m) is GroupNorm32 for m in unet.modules())
    assert norms > 10 and swapped(Accel(precision="fp32", compile=True, channel_moments_norm=True)) == norms
    assert swapped(Accel(precision="fp32", compile=True)) == 0
    assert swapped(Accel(precision="bf16", channel_moments_norm=True)) == 0  # eager: the library's kernel is faster
    assert not any(type(m) is GroupNormForCompile for m in unet.modules())
    torch._dynamo.reset()
    compiled = accelerate(unet, Accel(precision="fp32", compile=True, channel_moments_norm=True), "cpu")
    with torch.no_grad():
        assert _rel(compiled(*inputs), unet(*inputs)) <= 1e-5
    torch._dynamo.reset()


def test_guidance_through_a_compiled_classifier_matches_eager():
    """`--compile` also compiles the classifier, whose gradient w.r.t. the image guidance needs (AOT autograd)."""
    clf = _classifier()
    x, t, y = torch.randn(2, 3, 16, 16), torch.tensor([5, 500]), torch.tensor([1, 3])
    ref = classifier_guidance(clf, y)(x, t)
    torch._dynamo.reset()
    grad = classifier_guidance(accelerate(clf, Accel(precision="fp32", compile=True), "cpu"), y)(x, t)
    torch._dynamo.reset()
    assert ref.abs().max() > 0 and _rel(grad, ref) <= 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@torch.no_grad()
def test_cuda_graph_replay_matches_eager(unet, inputs):
    net = copy.deepcopy(unet).cuda()
    x, t = (v.cuda() for v in inputs)
    eager = accelerate(net, Accel(precision="bf16"))
    graphed = accelerate(net, Accel(precision="bf16", cuda_graphs=True))
    first = graphed(x, t)
    again = graphed(x + 1, t.flip(0))  # new values through the same static buffers
    assert _rel(first, eager(x, t)) <= 1e-3
    assert _rel(again, eager(x + 1, t.flip(0))) <= 1e-3
    assert not torch.equal(first, again)


FAULTS_PER_CALL = """
import resource, sys, torch
from repaint.accel import keep_freed_memory
from repaint.checkpoints import load_denoiser
torch.set_num_threads(1)
applied = keep_freed_memory() if sys.argv[1] == "kept" else None
net, config, _ = load_denoiser("default")
x, t = torch.randn(4, 3, config.image_size, config.image_size), torch.full((4,), 500)
def resident():
    return int(open("/proc/self/statm").read().split()[1])
with torch.no_grad():
    for _ in range(10):                                           # the first calls grow the heap
        net(x, t)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        net(x, t)
print(applied, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 10, resident() * 4096 // 2**20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt and the page-fault count are glibc/Linux's")
def test_kept_freed_memory_spares_each_call_its_page_faults():
    """The bundled model at batch 4: thousands of fresh pages per call with glibc's defaults, next to none once freed
    memory is kept (what the `repaint` program sets at start), at the cost of a few MiB of memory kept."""
    runs = {}
    for mode in ("default", "kept"):
        out = subprocess.run([sys.executable, "-c", FAULTS_PER_CALL, mode], capture_output=True, text=True, check=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
        runs[mode] = out.stdout.split()
    assert runs["kept"][0] == "True"
    default, kept = int(runs["default"][1]), int(runs["kept"][1])
    assert default > 1000 and kept < default / 20, (default, kept)
    extra = int(runs["kept"][2]) - int(runs["default"][2])
    assert extra <= 64, f"keeping freed memory cost {extra} MiB of resident memory"
