"""Validation of ``SamplerSettings.options``, the extra settings of samplers beyond the paper's."""

from __future__ import annotations

__all__ = ["check_options"]


def check_options(settings, defaults: dict) -> dict:
    """``settings.options`` merged over ``defaults``; an unknown key or a non-number is a one-line ValueError."""
    unknown = sorted(set(settings.options) - set(defaults))
    if unknown:
        raise ValueError(
            f"sampler {settings.sampler!r} has no option(s) {', '.join(unknown)}; options: {', '.join(defaults)}"
        )
    merged = {**defaults, **settings.options}
    for key, value in merged.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"option {key} of sampler {settings.sampler!r} must be a number, got {value!r}")
    return merged
