"""A 2AFC study with simulated participants whose answer is known: the example report in docs/study/.

Two methods ("ours", "baseline") over 20 images in each of two mask settings; each simulated participant prefers "ours"
with their own probability p_i ~ Beta(7, 3) (mean 0.70) in "wide" and Beta(5, 5) (mean 0.50) in "narrow", answers
40 pairs plus 5 repeats; one more participant always clicks the left image. All draws come from one seeded
torch.Generator. The votes go through the same calls as the server's (next_trial, record_vote), then
``repaint study report`` builds the report.

    python scripts/study_synthetic.py --out docs/study          # 30 participants, seed 0
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from PIL import Image

from repaint.study.report import build_report, report_markdown, write_report
from repaint.study.store import connect, create_study, next_trial, record_vote

TRUE_MEAN = {"wide": (7, 3), "narrow": (5, 5)}   # Beta(a, b) per setting: mean a / (a + b)


def _beta(a: int, b: int, g: torch.Generator) -> float:
    """One Beta(a, b) draw for integer a, b: X / (X + Y) with Gamma draws as sums of exponentials."""
    e = -torch.log(torch.rand(a + b, generator=g, dtype=torch.float64))
    return float(e[:a].sum() / e.sum())


def _folders(root: Path, g: torch.Generator) -> dict[str, Path]:
    for setting in TRUE_MEAN:
        for k in range(20):
            masked = torch.randint(0, 256, (32, 32, 3), generator=g, dtype=torch.uint8).numpy()
            for method in ("ours", "baseline"):
                for sub in ("inpainted", "gt_masked"):
                    (root / method / setting / sub).mkdir(parents=True, exist_ok=True)
                fill = torch.randint(0, 256, (32, 32, 3), generator=g, dtype=torch.uint8).numpy()
                Image.fromarray(fill).save(root / method / setting / "inpainted" / f"img{k}_s0.png")
                Image.fromarray(masked).save(root / method / setting / "gt_masked" / f"img{k}.png")
    return {m: root / m for m in ("ours", "baseline")}


def _setting_and_side(con, token: str) -> tuple[str, str]:
    row = con.execute("SELECT it.setting, ml.name FROM trials t JOIN pairs p ON p.id = t.pair JOIN items it "
                      "ON it.id = p.item JOIN methods ml ON ml.id = t.left_method WHERE t.token = ?",
                      (token,)).fetchone()
    return row[0], "left" if row[1] == "ours" else "right"


def simulate(out: Path, participants: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        folders = _folders(Path(tmp) / "res", g)
        db = Path(tmp) / "study.db"
        create_study(db, [folders["ours"], folders["baseline"]], reference="baseline", per_participant=40,
                     repeat_share=0.125, seed=seed)
        con = connect(db)
        for i in range(participants + 1):
            pid = f"sim{i:02d}" if i < participants else "left-clicker"
            prefs = {s: _beta(*ab, g) for s, ab in TRUE_MEAN.items()}
            while not (state := next_trial(con, pid))["done"]:
                token = state["trial"]["token"]
                setting, ours_side = _setting_and_side(con, token)
                other = "right" if ours_side == "left" else "left"
                side = "left" if i == participants else (
                    ours_side if float(torch.rand((), generator=g)) < prefs[setting] else other)
                rt = 600 + 1400 * float(torch.rand((), generator=g))
                record_vote(con, pid, token, side, rt, now=float(con.execute(
                    "SELECT served FROM trials WHERE token = ?", (token,)).fetchone()[0]) + rt / 1000 + 0.05)
        report = build_report(con, n_boot=2000, seed=0)
        for path in write_report(report, out):
            print("wrote", path)
        print(report_markdown(report))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/study"))
    parser.add_argument("--participants", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    simulate(args.out, args.participants, args.seed)


if __name__ == "__main__":
    main()
