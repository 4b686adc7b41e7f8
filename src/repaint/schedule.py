"""The RePaint jump schedule: which way the sampler walks the noise ladder, step by step.

The schedule is data: a list of respaced timesteps that starts at ``t_T - 1`` and ends at ``-1``, every entry one
above or one below the previous. A pair ``(t, t - 1)`` is a denoising step taken at ``t`` (one network call); a pair
``(t, t + 1)`` re-noises the image by one step (RePaint Alg. 1, line 10; no network call).

Resampling (paper Sec. 4.2): after every ``jump_length`` denoising steps the sampler jumps ``jump_length`` steps back up
with fresh noise and denoises again, ``jump_n_sample - 1`` extra times per jump point. Jump points are the multiples of
``jump_length`` strictly below ``t_T - jump_length``, 0 included, so the image is also re-noised after reaching t = 0.
Two optional inner levels (``jump2_*``, ``jump3_*``) nest shorter jumps inside the outer ones; an outer jump resets the
counters of the levels inside it. ``n_sample`` adds single up-and-down steps at every t, and ``start_resampling``
confines all resampling to t at or below it. This reproduces ``get_schedule_jump`` of the reference implementation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

__all__ = ["JumpParams", "JUMP_FIELDS", "JumpSchedule", "jump_schedule", "count_network_calls", "transitions",
           "network_calls_bound", "check_size", "MAX_NETWORK_CALLS"]

_NO_LIMIT = 100_000_000  # the reference's default start_resampling: resample everywhere
# The most network calls per sample a schedule may ask for (the paper's takes 2,410): beyond it the list of timesteps
# alone would fill memory, and the run would not end in a lifetime on any machine.
MAX_NETWORK_CALLS = 1_000_000


def _param(default: int, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True, kw_only=True)
class JumpParams:
    """The jump fields of a schedule, declared once: :class:`JumpSchedule` adds the starting point ``t_T``,
    :class:`repaint.settings.SamplerSettings` the respaced length and the sampler; the CLI builds its options and
    the reference-config reader its keys from these fields."""

    jump_length: int = _param(10, "j: how far each resampling jump goes back up")
    jump_n_sample: int = _param(10, "r: how often each stretch is denoised (r - 1 jumps per jump point)")
    n_sample: int = _param(1, "1 + the number of single up-and-down steps at every t")
    start_resampling: int = _param(_NO_LIMIT, "resample only at t <= this")
    jump2_length: int = _param(1, "jump length of the second (inner) level")
    jump2_n_sample: int = _param(1, "resamplings of the second level")
    jump3_length: int = _param(1, "jump length of the third (innermost) level")
    jump3_n_sample: int = _param(1, "resamplings of the third level")


JUMP_FIELDS = tuple(f.name for f in fields(JumpParams))


@dataclass(frozen=True)
class JumpSchedule(JumpParams):
    """Parameters of the RePaint jump schedule. The paper's setting is ``JumpSchedule(250, jump_length=10,
    jump_n_sample=10)``."""

    t_T: int = _param(250, "respaced steps the walk starts from (x at t_T - 1 is pure noise)")

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"schedule parameter {name} must be an integer, got {value!r}")
            minimum = 0 if name == "start_resampling" else 1
            if value < minimum:
                raise ValueError(f"schedule parameter {name} must be >= {minimum}, got {value}")
        for length, count, label in self._levels():
            if count > 1 and length >= self.t_T:
                raise ValueError(
                    f"{label}_length={length} must be smaller than steps={self.t_T} for {label}_n_sample={count} "
                    "to resample at all"
                )

        check_size(self.t_T, self)

    def _levels(self) -> list[tuple[int, int, str]]:
        """(length, count, name) per level, innermost first: the order in which jumps are tried at each t."""
        return [
            (self.jump3_length, self.jump3_n_sample, "jump3"),
            (self.jump2_length, self.jump2_n_sample, "jump2"),
            (self.jump_length, self.jump_n_sample, "jump"),
        ]

    def times(self) -> list[int]:
        """The list of timesteps, ``[t_T - 1, ..., -1]``."""
        return jump_schedule(**asdict(self))

    def network_calls(self) -> int:
        """Number of denoising steps, i.e. network calls per image (2,410 for the paper's setting)."""
        return count_network_calls(self.times())


def network_calls_bound(t_T: int, params: JumpParams) -> int:
    """An upper bound on the network calls of a schedule, in closed form (nothing is built); exact for one level
    (2,410 for the paper's). A level of length L has ``len(range(0, t_T - L, L))`` jump points, each jumping at most
    r - 1 times per fresh count; its count restarts at every jump of a level outside it. Each jump re-walks L steps
    down, and every visit of a t denoises up to ``n_sample`` times."""
    total_jumps = 0   # jumps of the levels outside the one being counted
    calls = t_T
    for length, count in ((params.jump_length, params.jump_n_sample), (params.jump2_length, params.jump2_n_sample),
                          (params.jump3_length, params.jump3_n_sample)):
        points = len(range(0, t_T - length, length))
        jumps = points * (count - 1) * (1 + total_jumps)
        calls += jumps * length
        total_jumps += jumps
    return calls * params.n_sample


def check_size(t_T: int, params: JumpParams) -> None:
    """Refuse, before anything is built, a schedule that could need more than :data:`MAX_NETWORK_CALLS` calls."""
    bound = network_calls_bound(t_T, params)
    if bound > MAX_NETWORK_CALLS:
        raise ValueError(
            f"steps={t_T}, jump_n_sample={params.jump_n_sample}, n_sample={params.n_sample} (and the inner levels) "
            f"could need up to {bound:,} network calls per sample, over the limit of {MAX_NETWORK_CALLS:,} (the "
            "paper's schedule takes 2,410)"
        )


def jump_schedule(t_T: int, jump_length: int = 10, jump_n_sample: int = 10, **more: int) -> list[int]:
    """Timesteps of the RePaint walk (see the module docstring); ``more`` are the other :class:`JumpParams`
    fields. Validated first."""
    params = JumpSchedule(t_T, jump_length=jump_length, jump_n_sample=jump_n_sample, **more)
    n_sample, start_resampling = params.n_sample, params.start_resampling
    levels = params._levels()
    fresh = [{point: count - 1 for point in range(0, t_T - length, length)} for length, count, _ in levels]
    remaining = [dict(counters) for counters in fresh]

    times: list[int] = []
    t = t_T
    while t >= 1:
        t -= 1
        times.append(t)
        if t + 1 < t_T - 1 and t <= start_resampling:
            for _ in range(n_sample - 1):
                times += [t + 1, t]
        for level, (length, _, _) in enumerate(levels):
            if remaining[level].get(t, 0) > 0 and t <= start_resampling - length:
                remaining[level][t] -= 1
                times += range(t + 1, t + length + 1)
                t += length
                for inner in range(level):  # an outer jump restarts the counts of the levels inside it
                    remaining[inner] = dict(fresh[inner])
    times.append(-1)
    return times


def transitions(times: list[int]) -> list[tuple[int, int]]:
    """Consecutive pairs ``(t_last, t_cur)`` of a schedule; checks that every move is one step up or down."""
    pairs = list(zip(times[:-1], times[1:]))
    for t_last, t_cur in pairs:
        if abs(t_cur - t_last) != 1:
            raise ValueError(f"schedule moves from t={t_last} to t={t_cur}; only single steps are allowed")
    return pairs


def count_network_calls(times: list[int]) -> int:
    """Number of denoising (downward) steps in a schedule."""
    return sum(t_cur < t_last for t_last, t_cur in zip(times[:-1], times[1:]))
