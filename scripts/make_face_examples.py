"""Write examples/face.png (a test-split UTKFace picture) and examples/face_mask.png (white = keep, black = fill).

    python scripts/make_face_examples.py [--data /work/shared/data/utkface64/test.tar]
"""

from __future__ import annotations

import argparse
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

FACE = "30_1_0_20170117131111201.jpg"   # a frontal, evenly lit face from test.tar (never trained on)
HOLE = (30, 51, 18, 46)                 # rows y0:y1, columns x0:x1 to fill: nose and mouth

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="/work/shared/data/utkface64/test.tar")
    parser.add_argument("--out", default=str(ROOT / "examples"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(args.data) as archive:
        member = next(m for m in archive.getmembers() if Path(m.name).name == FACE)
        face = Image.open(archive.extractfile(member)).convert("RGB")
    face.save(out / "face.png")
    keep = np.full(face.size[::-1], 255, dtype=np.uint8)
    y0, y1, x0, x1 = HOLE
    keep[y0:y1, x0:x1] = 0
    Image.fromarray(keep, mode="L").save(out / "face_mask.png")
    print(f"wrote {out / 'face.png'} and {out / 'face_mask.png'} ({(keep == 0).mean():.0%} to fill)")


if __name__ == "__main__":
    main()
