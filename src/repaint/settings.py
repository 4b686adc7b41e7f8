"""How to sample, declared once: :class:`SamplerSettings`, the named schedules and the schedule rule.

The CLI options, the API, the web app and the reference-config loader all build their settings here, so a schedule
field has one name, one default and one meaning everywhere.

The schedule rule (:func:`resolve_settings`): start from the model's recommended schedule (or a named schedule,
"paper" or "fast", which sets every schedule field, ``start_resampling`` included), then apply each explicitly given
field on its own.

Vocabulary, the same in code, command line, web app and docs: ``steps`` is T, the respaced length of the chain;
``jump_length`` is j; ``jump_n_sample`` is r, the number of times each jump is resampled; a *schedule* is a named set
of these ("paper", "fast"); a *preset* is a named model (see ``repaint models``), never a schedule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace

from .diffusion import DiffusionConfig
from .schedule import JUMP_FIELDS, JumpParams, JumpSchedule, check_size

__all__ = [
    "SamplerSettings",
    "SCHEDULE_FIELDS",
    "SCHEDULES",
    "PAPER",
    "FAST",
    "resolve_settings",
    "with_overrides",
    "MAX_AVERAGE",
]

# Draws averaged into one sample (``SamplerSettings.average``): each costs a full sampling run.
MAX_AVERAGE = 64


@dataclass(frozen=True, kw_only=True)
class SamplerSettings(JumpParams):
    """How to sample: the jump fields of :class:`repaint.schedule.JumpParams` and the fields below. Defaults are the
    paper's: 250 respaced steps, jump length 10, 10 resamplings."""

    steps: int = 250                  # respaced steps T (timestep_respacing is str(steps) unless given)
    timestep_respacing: str = ""      # overrides steps, e.g. "10,10,10" or "ddim50"
    sampler: str = "repaint"          # name in repaint.samplers.SAMPLERS
    injection: str = "reference"      # "reference" or "paper" (see repaint.samplers.repaint)
    paste_known: bool = True          # copy the exact known pixels into the result at the end
    clip_denoised: bool = True
    eta: float = 1.0                  # stochasticity of DDIM-type samplers (1 = DDPM-like)
    options: dict = field(default_factory=dict)  # extra settings of other samplers
    average: int = 1                  # draws averaged into each sample: K > 1 estimates the posterior mean

    def __post_init__(self) -> None:
        if not self.timestep_respacing and self.steps < 2:
            raise ValueError(f"steps must be at least 2 (the respaced chain needs two levels), got {self.steps}")
        for name in ("jump_length", "jump_n_sample", "n_sample"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.start_resampling < 0:
            raise ValueError(f"start_resampling must be >= 0, got {self.start_resampling}")
        if isinstance(self.average, bool) or not isinstance(self.average, int) or not 1 <= self.average <= MAX_AVERAGE:
            raise ValueError(f"average must be a whole number of draws in 1..{MAX_AVERAGE}, got {self.average!r}")
        if not math.isfinite(self.eta) or self.eta < 0:
            raise ValueError(f"eta must be a finite number >= 0, got {self.eta}")
        if not self.timestep_respacing:
            check_size(self.steps, self)

    def respacing(self) -> str:
        return self.timestep_respacing or str(self.steps)

    def diffusion_config(self, trained) -> DiffusionConfig:
        """The respaced diffusion for a checkpoint trained as ``trained`` (a models.config.DiffusionSettings)."""
        if not self.timestep_respacing and self.steps > trained.steps:
            raise ValueError(f"steps (T) must be at most {trained.steps:,} for this model (the noise levels it was "
                             f"trained with), got {self.steps:,}")
        return trained.diffusion_config(self.respacing())

    def jump_schedule(self, t_T: int) -> JumpSchedule:
        return JumpSchedule(t_T, **{name: getattr(self, name) for name in JUMP_FIELDS})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> "SamplerSettings":
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown sampler setting(s): {', '.join(unknown)}")
        return cls(**data)


# The fields a named schedule sets (and the CLI's schedule options override one by one). The named schedules are
# RePaint's, so they set the sampler (and clear its options) too: --paper on a model whose own default is another
# sampler still means the paper's method.
SCHEDULE_FIELDS = ("steps", "jump_length", "jump_n_sample", "start_resampling", "timestep_respacing", "sampler",
                   "options")

PAPER = SamplerSettings()  # T=250, j=10, r=10: 2,410 network calls
# A cheaper schedule, not a match for the paper's: RePaint T=50, j=5, r=10 with resampling only below t = 20 (230
# network calls instead of 2,410), the bundled face model's recommended schedule for speed on a CPU. It was picked
# among ~31 settings on one seed set of one easy problem and reported on the same seeds; re-measured on fresh seeds
# it leaves 0.040 [0.034, 0.045] of fills in the excluded component against the paper setting's 0.028 (difference
# +0.012 [+0.004, +0.019]), and it is not shown equivalent on any problem (docs/fidelity.md).
FAST = SamplerSettings(steps=50, jump_length=5, jump_n_sample=10, start_resampling=20)
SCHEDULES: dict[str, SamplerSettings] = {"paper": PAPER, "fast": FAST}


def with_overrides(settings: SamplerSettings, **changes) -> SamplerSettings:
    """``settings`` with the non-None ``changes`` applied."""
    return replace(settings, **{k: v for k, v in changes.items() if v is not None})


def resolve_settings(
    recommended: SamplerSettings = PAPER,
    schedule: str | None = None,
    **overrides,
) -> SamplerSettings:
    """The one schedule rule: ``recommended`` (the model's, or a config file's), or the named ``schedule`` that sets
    every schedule field; then each override that is not None replaces its own field only.

    An explicit ``steps`` clears a ``timestep_respacing`` string inherited from the base, so ``steps`` means what it
    says. Unknown field names and out-of-range values raise ValueError (one line).
    """
    if schedule is not None:
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; choose from {', '.join(SCHEDULES)}")
        base = replace(recommended, **{k: getattr(SCHEDULES[schedule], k) for k in SCHEDULE_FIELDS})
    else:
        base = recommended
    unknown = sorted(set(overrides) - {f.name for f in fields(SamplerSettings)})
    if unknown:
        raise ValueError(f"unknown sampler setting(s): {', '.join(unknown)}")
    if overrides.get("steps") is not None and overrides.get("timestep_respacing") is None:
        base = replace(base, timestep_respacing="")
    return with_overrides(base, **overrides)
