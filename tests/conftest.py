import json
import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(int(os.environ.get("REPAINT_TEST_THREADS", "2")))

FIXTURES = Path(os.environ.get("REPAINT_FIXTURES", Path(__file__).resolve().parents[1].parent / "shared/fixtures/official"))


def _require(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"conformance fixture {path} is missing; set REPAINT_FIXTURES to the official fixtures")
    return path


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return _require(FIXTURES)


@pytest.fixture(scope="session")
def schedules_fixture(fixtures_dir):
    return json.loads((fixtures_dir / "schedules.json").read_text())


@pytest.fixture(scope="session")
def respacing_fixture(fixtures_dir):
    return json.loads((fixtures_dir / "respacing.json").read_text())


@pytest.fixture(scope="session")
def steps_fixture(fixtures_dir):
    return torch.load(fixtures_dir / "diffusion_steps.pt")
