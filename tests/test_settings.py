"""What each sampler's table entry says it reads (and ``describe`` shows) is what it really reads."""

import dataclasses

import pytest
import torch
from sampler_helpers import run_on_mixture

from repaint.samplers import SAMPLERS, describe, network_calls
from repaint.settings import SamplerSettings


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_each_entry_says_which_schedule_fields_its_sampler_reads(name):
    base = SamplerSettings(steps=10, jump_length=2, jump_n_sample=3, sampler=name)
    other_jumps = dataclasses.replace(base, jump_length=3, jump_n_sample=2)
    reads_jumps = network_calls(base, 10) != network_calls(other_jumps, 10)
    assert reads_jumps == SAMPLERS[name].reads_jumps
    assert ("jump_length" in describe(base)) == SAMPLERS[name].reads_jumps

    small = SamplerSettings(steps=4, jump_length=1, jump_n_sample=1, sampler=name, clip_denoised=False)
    outputs = [run_on_mixture(dataclasses.replace(small, eta=eta), [5])[0] for eta in (0.0, 1.0)]
    assert (not torch.equal(*outputs)) == SAMPLERS[name].reads_eta
    assert ("eta=" in describe(small)) == SAMPLERS[name].reads_eta


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_each_entry_lists_the_options_its_sampler_takes(name):
    """An option the entry lists is accepted; one it does not list is refused, naming the sampler."""
    row = SAMPLERS[name]
    for key, default in row.options.items():
        if default is not None:
            settings = SamplerSettings(steps=10, jump_length=2, jump_n_sample=2, sampler=name, options={key: default})
            row.calls(settings, 10)
    with pytest.raises(ValueError, match=f"{name}.*no option"):
        settings = SamplerSettings(steps=10, jump_length=2, jump_n_sample=2, sampler=name,
                                   options={"no_such_option": 1})
        row.calls(settings, 10)
        row.run(None, None, None, None, settings=settings, generators=[])


def test_the_bundled_model_defaults_to_lanpaint_and_the_presets_mean_repaint():
    from repaint.inpainter import recommended_settings
    from repaint.settings import PAPER, resolve_settings
    from repaint.web.runner import RunOptions, Runner

    bundled = recommended_settings("default")
    assert bundled.sampler == "lanpaint" and network_calls(bundled, bundled.steps) == 230
    assert recommended_settings("celeba256") == PAPER
    paper = resolve_settings(bundled, "paper")
    assert paper.sampler == "repaint" and network_calls(paper, paper.steps) == 2410
    assert resolve_settings(SamplerSettings(sampler="smc", options={"particles": 4}), "fast").options == {}
    fast_ddnm = resolve_settings(bundled, "fast", sampler="ddnm")
    assert (fast_ddnm.sampler, fast_ddnm.steps, fast_ddnm.jump_length) == ("ddnm", 50, 5)
    assert resolve_settings(bundled, steps=30) == dataclasses.replace(bundled, steps=30)
    # the web page: "recommended" sampler and schedule are the model's own; a preset is RePaint's
    assert Runner.settings(None, bundled, RunOptions()) == bundled
    assert Runner.settings(None, bundled, RunOptions(schedule="fast")).sampler == "repaint"
    assert Runner.settings(None, bundled, RunOptions(sampler="copaint", schedule="paper")).sampler == "copaint"


def test_more_steps_than_the_model_was_trained_with_is_said_in_the_user_s_terms():
    from repaint.models.config import DiffusionSettings

    trained = DiffusionSettings(steps=1000, noise_schedule="linear", learn_sigma=True)
    with pytest.raises(ValueError, match=r"steps \(T\) must be at most 1,000 for this model .* got 100,000"):
        SamplerSettings(steps=100_000).diffusion_config(trained)
    assert SamplerSettings(steps=1000).diffusion_config(trained) is not None
