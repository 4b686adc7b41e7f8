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
def benchmark_script():
    """Import a script of benchmarks/ by name (they are files, not a package): ``benchmark_script("bench")``."""
    import importlib.util

    def load(name: str):
        path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


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


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 16x16 photo, its mask and a tiny random UNet checkpoint, for command-line tests."""
    import numpy as np
    from PIL import Image
    from test_cli import tiny_checkpoint

    root = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / "face.png")
    mask = np.full((16, 16), 255, np.uint8)
    mask[4:12, 4:12] = 0
    Image.fromarray(mask).save(root / "mask.png")
    return {"root": root, "model": tiny_checkpoint(root / "tiny.safetensors"), "image": root / "face.png",
            "mask": root / "mask.png"}
