import pytest
import torch

from repaint.diffusion import Diffusion, DiffusionConfig
from repaint.samplers.common import SamplingError, Step, classifier_guidance, make_generators
from repaint.samplers.repaint import repaint, repaint_iter
from repaint.samplers.repaint import _denoise_step
from repaint.schedule import jump_schedule


def dummy_model(x, model_t):
    """The fixtures' closed-form stand-in for a network."""
    return torch.cat([0.5 * x + 0.001 * model_t.float().view(-1, 1, 1, 1), torch.tanh(x)], dim=1)


class Replay:
    """Hands out recorded noise tensors in order, like the fixture's patched randn_like."""

    def __init__(self, tensors):
        self.tensors = list(tensors)

    def __call__(self, like):
        assert self.tensors, "sampler drew more noise than the reference"
        out = self.tensors.pop(0).clone()
        assert out.shape == like.shape
        return out


def _close(actual, expected):
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6)


def test_whole_sampling_loop_matches_reference(steps_fixture):
    loop = steps_fixture["p_sample_loop"]
    diffusion = Diffusion(DiffusionConfig(timestep_respacing=loop["diffusion_config"]["timestep_respacing"]))
    times = jump_schedule(**loop["schedule_jump_params"])
    assert times == loop["times"]
    recorded = []
    for i, tr in enumerate(loop["transitions"]):
        recorded.append(loop["noise_main"][i])
        if tr["kind"] == "reverse" and tr["injection"]:
            recorded.append(loop["noise_gt"][i])
    noise = Replay(recorded)
    seen = []

    def model(x, model_t):
        seen.append((x.clone(), model_t.clone()))
        return dummy_model(x, model_t)

    steps = list(
        repaint_iter(model, diffusion, times, loop["gt"], loop["gt_keep_mask"], noise_fn=noise, x_T=loop["x_T"],
                     paste_known=False)
    )
    assert not noise.tensors, "sampler drew less noise than the reference"
    expected = [(t["t_last"], t["t_cur"], t["kind"]) for t in loop["transitions"]]
    assert [(s.t_last, s.t_cur, s.kind) for s in steps] == expected
    reverse = [i for i, t in enumerate(loop["transitions"]) if t["kind"] == "reverse"]
    assert len(seen) == len(reverse) == steps[-1].calls
    for (x_in, model_t), i in zip(seen, reverse):
        _close(x_in, loop["model_input_x"][i])
        assert int(model_t[0]) == int(loop["model_t"][i])
        _close(steps[i].pred_xstart, loop["pred_xstart"][i])
    _close(torch.stack([s.x for s in steps]), loop["image_after"])
    _close(steps[-1].x, loop["final_sample"])
    # the reference leaves the known region as sampled: it is not exactly gt
    known = loop["gt_keep_mask"].bool()
    assert not torch.equal(steps[-1].x[known], loop["gt"][known])


def test_single_reverse_steps_match_reference(steps_fixture):
    diffusion = Diffusion(DiffusionConfig(timestep_respacing="250"))
    for case in steps_fixture["p_sample"]:
        noises = [case["sample_noise"]] + ([case["gt_noise"]] if case["injection_active"] else [])
        received = {}

        def model(x, model_t, out=case["model_output"]):
            received["x"], received["t"] = x.clone(), model_t.clone()
            return out

        cond_fn = None
        if case["cond_gradient"] is not None:
            def cond_fn(x, model_t, grad=case["cond_gradient"]):
                received["cond_x"], received["cond_t"] = x.clone(), model_t.clone()
                return grad

        t = case["t"]
        sample, pred_xstart = _denoise_step(
            model, diffusion, case["x_t"], int(t[0]), t, case["gt"], case["gt_keep_mask"], Replay(noises), cond_fn,
            True, "reference", inject=case["injection_active"],
        )
        _close(received["x"], case["model_input_x"])
        assert torch.equal(received["t"], case["model_t_received"])
        _close(sample, case["sample"])
        _close(pred_xstart, case["pred_xstart"])
        if cond_fn is not None:
            _close(received["cond_x"], case["model_input_x"])
            assert torch.equal(received["cond_t"], case["model_t_received"])


def _setup(batch=2, size=8, respacing="20", seed=0):
    diffusion = Diffusion(DiffusionConfig(timestep_respacing=respacing))
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    mask = (torch.rand(batch, 1, size, size, generator=g) > 0.5).float()
    times = jump_schedule(diffusion.num_timesteps, 3, 2)
    return diffusion, times, gt, mask


def test_final_paste_makes_known_region_exact():
    diffusion, times, gt, mask = _setup()
    out = repaint(dummy_model, diffusion, times, gt, mask, generators=make_generators([1, 2]))
    known = mask.expand_as(gt).bool()
    assert torch.equal(out[known], gt[known])
    raw = repaint(dummy_model, diffusion, times, gt, mask, generators=make_generators([1, 2]), paste_known=False)
    assert not torch.equal(raw[known], gt[known])
    assert torch.equal(out[~known], raw[~known])


def test_same_seeds_same_result_and_batch_independence():
    diffusion, times, gt, mask = _setup()
    a = repaint(dummy_model, diffusion, times, gt, mask, generators=make_generators([5, 6]))
    b = repaint(dummy_model, diffusion, times, gt, mask, generators=make_generators([5, 6]))
    assert torch.equal(a, b)
    alone = repaint(dummy_model, diffusion, times, gt[1:], mask[1:], generators=make_generators([6]))
    assert torch.equal(alone, a[1:])
    other = repaint(dummy_model, diffusion, times, gt, mask, generators=make_generators([5, 7]))
    assert torch.equal(other[0], a[0]) and not torch.equal(other[1], a[1])


def test_paper_variant_joins_known_region_after_the_step():
    diffusion, times, gt, mask = _setup()
    seen = []

    def model(x, model_t):
        seen.append(x.clone())
        return dummy_model(x, model_t)

    out = repaint(model, diffusion, times, gt, mask, generators=make_generators([1, 2]), injection="paper",
                  paste_known=False)
    known = mask.expand_as(gt).bool()
    assert torch.equal(out[known], gt[known])  # eq. 8 at t = 0 uses the ground truth itself
    reference = repaint(dummy_model, diffusion, times, gt, mask, generators=make_generators([1, 2]), paste_known=False)
    assert not torch.allclose(out, reference)


def test_callback_sees_every_transition_and_counts_calls():
    diffusion, times, gt, mask = _setup()
    steps: list[Step] = []
    repaint(dummy_model, diffusion, times, gt, mask, generators=make_generators([1, 2]), callback=steps.append)
    assert len(steps) == len(times) - 1
    assert steps[-1].calls == sum(b < a for a, b in zip(times[:-1], times[1:]))
    assert steps[0].pred_xstart is not None and steps[0].kind == "reverse"


def test_nan_model_raises():
    diffusion, times, gt, mask = _setup()
    with pytest.raises(SamplingError, match="NaN"):
        repaint(lambda x, t: dummy_model(x, t) * float("nan"), diffusion, times, gt, mask,
                generators=make_generators([1, 2]))


def test_classifier_guidance_uses_chosen_class():
    diffusion, times, gt, mask = _setup()
    weights = torch.randn(3 * 8 * 8, 4, generator=torch.Generator().manual_seed(3))
    classifier = lambda x, model_t: x.flatten(1) @ weights  # noqa: E731
    results = [
        repaint(dummy_model, diffusion, times, gt, mask, generators=make_generators([1, 2]),
                cond_fn=classifier_guidance(classifier, torch.tensor([label, label]), scale=10.0))
        for label in (0, 1)
    ]
    assert not torch.allclose(results[0], results[1])
    logits = [torch.log_softmax(classifier(r, None), -1) for r in results]
    assert (logits[0][:, 0] > logits[1][:, 0]).all() and (logits[1][:, 1] > logits[0][:, 1]).all()


def test_loop_needs_no_host_synchronisation(monkeypatch):
    diffusion, times, gt, mask = _setup()

    def forbidden(*args, **kwargs):
        raise AssertionError("host synchronisation inside the sampling loop")

    steps = repaint_iter(dummy_model, diffusion, times, gt, mask, generators=make_generators([1, 2]))
    for name in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "cpu", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    for _ in steps:
        pass


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"injection": "late"}, "injection"),
        ({"generators": make_generators([1])}, "one generator per image"),
        ({"times": [30, 29, -1]}, "schedule"),
        ({"mask": torch.ones(2, 1, 4, 4)}, "does not fit"),
    ],
)
def test_bad_arguments_are_refused(kwargs, word):
    diffusion, times, gt, mask = _setup()
    args = {"times": times, "mask": mask, "generators": make_generators([1, 2])} | kwargs
    with pytest.raises(ValueError, match=word):
        repaint(dummy_model, diffusion, args.pop("times"), gt, args.pop("mask"), **args)
