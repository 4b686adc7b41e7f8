import json
import os
import sys
import tempfile
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # shared test helpers (official.py, ...)

from official import require_fixtures  # noqa: E402

# Downloads and compiled kernels go to a folder of this test session, never to the user's cache.
os.environ["REPAINT_HOME"] = tempfile.mkdtemp(prefix="repaint-home-")

# The test networks are tiny: one thread is fastest and does not fight other processes for the two CI cores.
torch.set_num_threads(int(os.environ.get("REPAINT_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return require_fixtures()


@pytest.fixture(scope="session")
def schedules_fixture(fixtures_dir):
    return json.loads((fixtures_dir / "schedules.json").read_text())


@pytest.fixture(scope="session")
def respacing_fixture(fixtures_dir):
    return json.loads((fixtures_dir / "respacing.json").read_text())


@pytest.fixture(scope="session")
def steps_fixture(fixtures_dir):
    return torch.load(fixtures_dir / "diffusion_steps.pt")
