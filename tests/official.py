"""Where the reference implementation's conformance numbers are, and how to run a network on one of its cases.

The numbers live in the repository (tests/fixtures/official, 7.5 MB, with their README), so the suite runs from a
plain clone; REPAINT_FIXTURES points elsewhere (e.g. a newer copy being checked).
"""

import os
from pathlib import Path

import torch

from repaint.models import EncoderUNetModel

FIXTURES = Path(os.environ.get("REPAINT_FIXTURES") or Path(__file__).resolve().parent / "fixtures" / "official")


def require_fixtures() -> Path:
    if not FIXTURES.is_dir():
        raise FileNotFoundError(f"conformance fixtures {FIXTURES} are missing; set REPAINT_FIXTURES to their folder")
    return FIXTURES


def load_fixture(name: str):
    """(io dict, state dict) of one official network case."""
    return torch.load(require_fixtures() / f"{name}_io.pt"), torch.load(FIXTURES / f"{name}_state_dict.pt")


def run(model, io):
    """The network's output on the case's inputs (the classifier takes no labels)."""
    with torch.no_grad():
        if isinstance(model, EncoderUNetModel):
            return model(io["x"], io["timesteps"])
        return model(io["x"], io["timesteps"], io["y"])


def reference(io):
    return io["logits"] if "logits" in io else io["output"]
