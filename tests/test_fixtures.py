"""The conformance fixtures ship with the repository, so the suite runs from a plain clone."""

import re
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
BUNDLED = TESTS / "fixtures" / "official"


def test_bundled_fixtures_are_complete_and_the_default():
    listed = re.findall(r"^\* `([\w.]+)` \(([\d,]+) bytes\)", (BUNDLED / "README.md").read_text(), re.M)
    assert len(listed) == 12
    for name, size in listed:
        assert (BUNDLED / name).stat().st_size == int(size.replace(",", "")), name
    # Without REPAINT_FIXTURES the tests read the copy in the repository, not a folder beside the checkout.
    code = "import official; print(official.FIXTURES)"
    env = {"PATH": "", "PYTHONPATH": str(TESTS)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert Path(out.stdout.strip()) == BUNDLED
    env["REPAINT_FIXTURES"] = "/elsewhere"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "/elsewhere"
