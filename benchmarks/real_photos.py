"""Real photos with realistic defects: the bundled model against the classical fills (docs/real-photos.md).

Photos nobody here made: scikit-image's sample photos (astronaut, chelsea, coffee, rocket, immunohistochemistry;
they ship with the installed package) get seeded defect masks (thin scratches 3-8 px wide, dust spots, a text
overlay, overhead wires, an object box); test faces of utkface64 (read from its tar, never copied) get the paper's six
mask settings. Every method fills the same holes through :func:`repaint.api.inpaint` (``inpaint_stream`` for the
faces): ``default`` (the bundled model's own sampler), optionally ``fast`` (RePaint T=50, 230 calls), and the
classical ``biharmonic``, ``telea`` and ``ns``.

Scores: PSNR and SSIM in the hole only (repaint.evaluation.metrics with the hole as the region), per image; paired
differences (the first method, ``default`` unless told, minus each other one) with 95% bootstrap intervals (10,000
resamples of the cases, seeded torch.Generator). Method ``tile`` is the default sampler at fit ``tile``; a method
``refine:start=F:init=NAME:fit=FIT`` is sampler ``refine`` with those options (fit ``tile`` unless said), and
``--reuse FILE`` pairs the methods run now with an earlier run's per-case numbers of the others. Also
network calls (a hook on the UNet) and seconds per image (wall time on a shared CPU: under load). The margin is
fixed in the doc before the run: a claim "at least as good" holds when the interval's lower end is not below -0.5 dB.

    python benchmarks/real_photos.py --faces 0 --out benchmarks/results/real_photos.json       # photos (~15 min)
    python benchmarks/real_photos.py --mask-seeds 0 --out benchmarks/results/real_faces.json  # faces (~15 min)
    python benchmarks/real_photos.py --defects scratches,dust,text,wires --faces 0 \
        --methods refine:start=0.1:init=biharmonic,biharmonic,telea,ns --reuse benchmarks/results/real_photos.json \
        --out benchmarks/results/real_photos_refine.json --sheets docs/real-photos/refine      # refine (~8 min)

(times on 2 CPU cores shared with other jobs, where one batch-8 network call of the bundled model took 0.66 s and
one default fill of a 512x512 photo 80 s)

Results: benchmarks/results/real_photos.json, contact sheets docs/real-photos/*.png, the tables printed as Markdown.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import platform
import tarfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from repaint import api
from repaint.evaluation.metrics import psnr, ssim
from repaint.masks import make_mask
from repaint.samplers import describe
from repaint.settings import SamplerSettings, resolve_settings

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "camera")
UTKFACE_TEST = Path("/work/shared/data/utkface64/test.tar")
FACE_SETTINGS = ("wide", "narrow", "every_second_line", "super_resolve_2x", "half", "expand")
CLASSICAL = ("biharmonic", "telea", "ns")
MARGIN_DB = -0.5   # fixed before the run (docs/real-photos.md)


# ---------------------------------------------------------------------------------------------------------------
# Defects: hole masks (bool [H, W], True = fill) drawn from a seeded torch.Generator.
# ---------------------------------------------------------------------------------------------------------------

def _u(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen))


def _i(gen: torch.Generator, lo: int, hi: int) -> int:
    """An int in lo..hi inclusive."""
    return int(torch.randint(lo, hi + 1, (), generator=gen))


def _canvas(h: int, w: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("L", (w, h), 0)
    return img, ImageDraw.Draw(img)


def scratches(h: int, w: int, gen: torch.Generator) -> np.ndarray:
    """Two or three straight scratches across most of the photo, each 3-8 px wide."""
    img, draw = _canvas(h, w)
    for _ in range(_i(gen, 2, 3)):
        angle = _u(gen, 0, math.pi)
        cy, cx = _u(gen, 0.3, 0.7) * h, _u(gen, 0.3, 0.7) * w
        half = _u(gen, 0.3, 0.5) * math.hypot(h, w)
        dy, dx = math.sin(angle) * half, math.cos(angle) * half
        draw.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=255, width=_i(gen, 3, 8))
    return np.asarray(img) > 0


def dust(h: int, w: int, gen: torch.Generator) -> np.ndarray:
    """40-120 dust spots, 2-8 px across (slightly elliptic)."""
    img, draw = _canvas(h, w)
    for _ in range(_i(gen, 40, 120)):
        y, x = _u(gen, 0, h), _u(gen, 0, w)
        ry, rx = _u(gen, 1, 4), _u(gen, 1, 4)
        draw.ellipse([x - rx, y - ry, x + rx, y + ry], fill=255)
    return np.asarray(img) > 0


def text(h: int, w: int, gen: torch.Generator) -> np.ndarray:
    """A date stamp and a caption in Pillow's default font, 20-34 px tall (strokes 2-4 px)."""
    img, draw = _canvas(h, w)
    stamp = f"{_i(gen, 1990, 2024)}-{_i(gen, 1, 12):02d}-{_i(gen, 1, 28):02d} {_i(gen, 0, 23):02d}:{_i(gen, 0, 59):02d}"
    for line, size in ((stamp, _i(gen, 20, 34)), ("holiday photo  #" + str(_i(gen, 10, 999)), _i(gen, 20, 34))):
        font = ImageFont.load_default(size=size)
        left, top, right, bottom = draw.textbbox((0, 0), line, font=font)
        x = _u(gen, 0.02, max(0.03, 1 - (right - left) / w - 0.02)) * w
        y = _u(gen, 0.05, 0.9) * h
        draw.text((x, y), line, fill=255, font=font, stroke_width=1)
    return np.asarray(img) > 0


def wires(h: int, w: int, gen: torch.Generator) -> np.ndarray:
    """Two or three overhead wires: sagging curves from the left edge to the right edge, 2-5 px thick."""
    img, draw = _canvas(h, w)
    xs = np.linspace(-5, w + 5, 200)
    for _ in range(_i(gen, 2, 3)):
        y0, y1, sag = _u(gen, 0.05, 0.6) * h, _u(gen, 0.05, 0.6) * h, _u(gen, 0.02, 0.2) * h
        t = (xs + 5) / (w + 10)
        ys = y0 + (y1 - y0) * t + sag * 4 * t * (1 - t)
        draw.line(list(zip(xs.tolist(), ys.tolist())), fill=255, width=_i(gen, 2, 5), joint="curve")
    return np.asarray(img) > 0


def box(h: int, w: int, gen: torch.Generator) -> np.ndarray:
    """One object box, 12-20 % of each side, anywhere inside the photo."""
    bh, bw = int(_u(gen, 0.12, 0.2) * h), int(_u(gen, 0.12, 0.2) * w)
    top, left = _i(gen, 0, h - bh), _i(gen, 0, w - bw)
    hole = np.zeros((h, w), bool)
    hole[top:top + bh, left:left + bw] = True
    return hole


DEFECTS = {"scratches": scratches, "dust": dust, "text": text, "wires": wires, "box": box}
THIN = ("scratches", "dust", "text", "wires")   # every stroke at most 8 px wide


def photo(name: str) -> np.ndarray:
    import skimage.data

    image = getattr(skimage.data, name)()
    if image.ndim == 2:   # camera is grey: the same grey in three channels
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image)


def test_faces(n: int, seed: int = 0, first: int = 0) -> list[tuple[str, np.ndarray]]:
    """Faces ``first`` .. ``first + n - 1`` of a seeded permutation of the utkface64 test split, read straight from
    the tar."""
    with tarfile.open(UTKFACE_TEST) as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile()), key=lambda m: m.name)
        order = torch.randperm(len(members), generator=torch.Generator().manual_seed(seed))[first:first + n].tolist()
        return [(members[i].name, np.asarray(Image.open(io.BytesIO(tar.extractfile(members[i]).read()))
                                             .convert("RGB"))) for i in order]


# ---------------------------------------------------------------------------------------------------------------
# Running and scoring.
# ---------------------------------------------------------------------------------------------------------------

def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].double() / 127.5 - 1


def score(sample: np.ndarray, truth: np.ndarray, hole: np.ndarray) -> dict:
    region = torch.from_numpy(hole)[None].double()
    a, b = _tensor(sample), _tensor(truth)
    return {"psnr": float(psnr(a, b, region)[0]), "ssim": float(ssim(a, b, region)[0])}


class CallCounter:
    """Counts the UNet's forward calls (one per batched network call)."""

    def __init__(self, inpainter) -> None:
        self.count = 0
        inpainter.unet.register_forward_pre_hook(lambda *_: self._add())

    def _add(self) -> None:
        self.count += 1


def method_settings(inpainter, names: list[str]) -> dict[str, SamplerSettings]:
    """Each method's settings; a spec's ``average=K`` (any method) makes each sample the mean of K draws."""
    table = {"default": inpainter.recommended, "tile": inpainter.recommended, "crop": inpainter.recommended,
             "fast": resolve_settings(inpainter.recommended, "fast")}
    out = {}
    for m in names:
        base, average = m.split(":")[0], int(_spec(m).get("average", 1))
        settings = table[base] if base in table else refine_settings(inpainter, m) if base == "refine" \
            else SamplerSettings(sampler=base)
        out[m] = resolve_settings(settings, average=average)
    return out


def _spec(method: str) -> dict:
    """``refine:start=0.2:init=telea:fit=tile:average=4`` -> {"start": 0.2, "init": "telea", "fit": "tile",
    "average": "4"}."""
    pairs = [part.split("=", 1) for part in method.split(":")[1:]]
    return {k: (float(v) if k in ("start", "resample") else v) for k, v in pairs}


def refine_settings(inpainter, method: str) -> SamplerSettings:
    """Sampler ``refine`` on the bundled model's respaced chain (46 steps), the spec's options (less ``fit`` and
    ``average``)."""
    options = {k: v for k, v in _spec(method).items() if k not in ("fit", "average")}
    return resolve_settings(inpainter.recommended, sampler="refine", options=options)


def fit_of(method: str) -> str:
    """"tile" is the default sampler at fit "tile" (model-sized tiles at the photo's resolution), "crop" at fit "crop"
    (windows scaled down where a hole is larger than the model: what "default" was before ``auto`` tiled such holes,
    and what the recorded "default" rows of docs/real-photos.md ran); a ``refine:...`` spec says its own fit (default
    "tile"); the rest "auto"."""
    base = method.split(":")[0]
    if base == "refine":
        return _spec(method).get("fit", "tile")
    return base if base in ("tile", "crop") else "auto"


def run_photos(inpainter, counter, methods, mask_seeds, sheets_dir, photos=PHOTOS,
               defects=tuple(DEFECTS)) -> list[dict]:
    rows, crops = [], {}
    for name in photos:
        image = photo(name)
        h, w = image.shape[:2]
        for kind, make in ((k, DEFECTS[k]) for k in defects):
            for mask_seed in mask_seeds:
                gen = torch.Generator().manual_seed(1000 * mask_seed + list(DEFECTS).index(kind))
                hole = make(h, w, gen)
                keep = ~hole
                case = {"photo": name, "size": [h, w], "defect": kind, "mask_seed": mask_seed,
                        "hole_fraction": float(hole.mean()), "methods": {}}
                outs = {}
                for method, settings in methods.items():
                    before, start = counter.count, time.perf_counter()
                    result = api.inpaint(inpainter, image, keep, settings=settings, seeds=[0], name=name,
                                         fit=fit_of(method))
                    seconds, out = time.perf_counter() - start, result.samples[0]
                    assert np.array_equal(out[keep], image[keep]), "a known pixel changed"
                    outs[method] = out
                    case["methods"][method] = {**score(out, image, hole), "calls": counter.count - before,
                                               "seconds": seconds, "fit": result.fit,
                                               "windows": len(result.windows)}
                rows.append(case)
                print(f"{name:22s} {kind:9s} seed {mask_seed}: " + "  ".join(
                    f"{m} {v['psnr']:.1f}dB/{v['calls']}c/{v['seconds']:.1f}s" for m, v in case["methods"].items()),
                    flush=True)
                if mask_seed == mask_seeds[0]:
                    crops.setdefault(kind, []).append(_crop_row(image, hole, outs))
    for kind, sheet in crops.items():
        _save_sheet(sheet, list(methods), sheets_dir / f"photos_{kind}.png")
    return rows


def run_faces(inpainter, counter, methods, n_faces, sheets_dir, first: int = 0) -> list[dict]:
    faces = test_faces(n_faces, first=first)
    rows = []
    sheet = []
    for setting in FACE_SETTINGS:
        holes = [make_mask(setting, 64, seed=first + i).numpy() < 0.5 for i in range(len(faces))]
        outs: dict[str, list[np.ndarray]] = {}
        per_method = {}
        for method, settings in methods.items():
            requests = [api.InpaintRequest(img, ~hole, (0,), name) for (name, img), hole in zip(faces, holes)]
            before, start = counter.count, time.perf_counter()
            results = list(api.inpaint_stream(inpainter, requests, settings, batch_size=8, fit=fit_of(method)))
            seconds = time.perf_counter() - start
            outs[method] = [r.samples[0] for r in results]
            per_method[method] = {"calls": counter.count - before, "seconds_per_image": seconds / len(faces)}
        for i, ((name, img), hole) in enumerate(zip(faces, holes)):
            rows.append({"face": name, "setting": setting, "methods": {
                m: score(outs[m][i], img, hole) for m in methods}})
        for method, cost in per_method.items():
            for row in rows[-len(faces):]:
                row["methods"][method].update(calls=cost["calls"] / len(faces), seconds=cost["seconds_per_image"])
        sheet.append(_face_row(faces[0][1], holes[0], {m: outs[m][0] for m in methods}))
        print(f"faces {setting:18s}: " + "  ".join(
            f"{m} {np.mean([r['methods'][m]['psnr'] for r in rows[-len(faces):]]):.2f}dB" for m in methods),
            flush=True)
    _save_sheet(sheet, list(methods), sheets_dir / "faces.png")
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Statistics and pictures.
# ---------------------------------------------------------------------------------------------------------------

def reuse(rows: list[dict], path: Path, names: list[str]) -> list[str]:
    """Copy into ``rows`` the per-case numbers of the methods in ``path`` that were not run now (marked "reused");
    their names, in the file's order. A case must match by photo, defect, mask seed and the hole's size."""
    earlier = {(c["photo"], c["defect"], c["mask_seed"]): c for c in json.loads(path.read_text())["photos"]["cases"]}
    added: list[str] = []
    for row in rows:
        old = earlier[(row["photo"], row["defect"], row["mask_seed"])]
        assert abs(old["hole_fraction"] - row["hole_fraction"]) < 1e-12, "the masks differ from the earlier run's"
        for m, v in old["methods"].items():
            if m not in names:
                row["methods"][m] = {**v, "reused": str(path)}
                added += [m] if m not in added else []
    return added


def paired_interval(diffs: list[float], resamples: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """Mean paired difference and its 95% percentile-bootstrap interval (cases resampled with replacement)."""
    d = torch.tensor(diffs, dtype=torch.float64)
    idx = torch.randint(len(d), (resamples, len(d)), generator=torch.Generator().manual_seed(seed))
    means = d[idx].mean(dim=1)
    lo, hi = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return float(d.mean()), lo, hi


def summarise(rows: list[dict], group_key: str, groups, methods: list[str]) -> list[dict]:
    out = []
    for group in groups:
        cases = [r for r in rows if (r[group_key] in group if isinstance(group, tuple) else r[group_key] == group)]
        if not cases:
            continue
        label = "thin (" + ", ".join(group) + ")" if isinstance(group, tuple) else group
        ref = methods[0]                   # differences are the first method minus each other one
        entry = {"group": label, "n": len(cases), "methods": {}, f"{ref}_minus": {}}
        for m in methods:
            vals = [c["methods"][m] for c in cases]
            entry["methods"][m] = {k: float(np.mean([v[k] for v in vals]))
                                   for k in ("psnr", "ssim", "calls", "seconds")}
        for m in methods[1:]:
            entry[f"{ref}_minus"][m] = {
                k: paired_interval([c["methods"][ref][k] - c["methods"][m][k] for c in cases])
                for k in ("psnr", "ssim")}
        out.append(entry)
    return out


def markdown(summary: list[dict], methods: list[str]) -> str:
    ref = methods[0]
    lines = ["| cases | n | " + " | ".join(f"{m} PSNR / SSIM" for m in methods) + f" | calls ({ref}) | s/image "
             f"({ref}; classical max) |", "|" + "---|" * (len(methods) + 4)]
    for e in summary:
        cells = [f"{e['methods'][m]['psnr']:.2f} / {e['methods'][m]['ssim']:.3f}" for m in methods]
        classical = max(e["methods"][m]["seconds"] for m in methods if m in CLASSICAL) if set(methods) & set(
            CLASSICAL) else float("nan")
        first = e["methods"][ref]
        lines.append(f"| {e['group']} | {e['n']} | " + " | ".join(cells) +
                     f" | {first['calls']:.0f} | {first['seconds']:.2f}; {classical:.2f} |")
    lines += ["", f"| cases | {ref} minus | PSNR dB, mean [95% CI] | SSIM, mean [95% CI] |", "|---|---|---|---|"]
    for e in summary:
        for m, d in e[f"{ref}_minus"].items():
            p, s = d["psnr"], d["ssim"]
            lines.append(f"| {e['group']} | {m} | {p[0]:+.2f} [{p[1]:+.2f}, {p[2]:+.2f}] | "
                         f"{s[0]:+.3f} [{s[1]:+.3f}, {s[2]:+.3f}] |")
    return "\n".join(lines)


def _crop_row(image, hole, outs, side: int = 96, zoom: int = 2) -> list[np.ndarray]:
    """[masked, each method, original]: a side x side crop around the hole pixel nearest the hole's centre of mass,
    enlarged ``zoom`` times (nearest neighbour) so thin fills can be seen."""
    ys, xs = np.nonzero(hole)
    k = int(np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2))
    h, w = hole.shape
    top, left = min(max(ys[k] - side // 2, 0), h - side), min(max(xs[k] - side // 2, 0), w - side)
    masked = np.where(hole[..., None], np.array([255, 0, 255], np.uint8), image)
    tiles = [masked, *outs.values(), image]
    return [t[top:top + side, left:left + side].repeat(zoom, 0).repeat(zoom, 1) for t in tiles]


def _face_row(image, hole, outs, zoom: int = 3) -> list[np.ndarray]:
    masked = np.where(hole[..., None], np.array([255, 0, 255], np.uint8), image)
    return [t.repeat(zoom, 0).repeat(zoom, 1) for t in (masked, *outs.values(), image)]


def column_label(method: str) -> str:
    """A sheet column's short name: ``refine:start=0.2:init=biharmonic:average=8`` -> ``refine 0.2, mean of 8``."""
    spec = _spec(method)
    words = method.split(":")[0] + (f" {spec['start']:g}" if "start" in spec else "")
    return words + (f", mean of {spec['average']}" if int(spec.get("average", 1)) > 1 else "")


def _save_sheet(rows: list[list[np.ndarray]], methods: list[str], path: Path, gap: int = 4) -> None:
    """Rows of tiles on white, a header of column names (hole shown magenta in the first column)."""
    th, tw = rows[0][0].shape[:2]
    header = 18
    names = ["hole", *map(column_label, methods), "original"]
    sheet = Image.new("RGB", (len(names) * (tw + gap), header + len(rows) * (th + gap)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, n in enumerate(names):
        draw.text((c * (tw + gap) + 4, 2), n, fill="black", font=ImageFont.load_default(size=13))
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            sheet.paste(Image.fromarray(tile), (c * (tw + gap), header + r * (th + gap)))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="default,biharmonic,telea,ns",
                        help="comma-separated: default, tile (default at fit tile), fast, biharmonic, telea, ns, and "
                             "refine:start=F:init=NAME:resample=R:fit=FIT (sampler refine; fit default tile); any "
                             "method may end in :average=K (each sample the mean of K draws)")
    parser.add_argument("--mask-seeds", type=int, default=1, help="masks per photo and defect (0 = no photos)")
    parser.add_argument("--first-mask-seed", type=int, default=0,
                        help="the masks are seeds FIRST .. FIRST + MASK_SEEDS - 1 (the report set is seed 0)")
    parser.add_argument("--reuse", type=Path, default=None,
                        help="an earlier result JSON: its per-case numbers of methods not run now (same photo, "
                             "defect and mask seed, checked by the hole's size) join the comparison")
    parser.add_argument("--photos", default="astronaut,chelsea,coffee",
                        help=f"comma-separated scikit-image photos (of {', '.join(PHOTOS)})")
    parser.add_argument("--defects", default=",".join(DEFECTS), help="comma-separated defect kinds")
    parser.add_argument("--faces", type=int, default=8, help="utkface64 test faces (0 = none)")
    parser.add_argument("--first-face", type=int, default=0,
                        help="faces FIRST .. FIRST + FACES - 1 of the seeded permutation, mask seed = that position "
                             "(the report set starts at 0)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "real_photos.json")
    parser.add_argument("--sheets", type=Path, default=ROOT / "docs" / "real-photos")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    inpainter = api.load_inpainter("default", device="cpu")
    counter = CallCounter(inpainter)
    methods = method_settings(inpainter, args.methods.split(","))
    names = list(methods)
    start = time.perf_counter()
    mask_seeds = list(range(args.first_mask_seed, args.first_mask_seed + args.mask_seeds))
    photo_rows = run_photos(inpainter, counter, methods, mask_seeds, args.sheets, args.photos.split(","),
                            args.defects.split(",")) if args.mask_seeds else []
    if args.reuse:
        names += reuse(photo_rows, args.reuse, names)
    face_rows = run_faces(inpainter, counter, methods, args.faces, args.sheets, args.first_face) if args.faces else []
    photo_summary = summarise(photo_rows, "defect", [THIN, *DEFECTS], names)
    face_summary = summarise(face_rows, "setting", FACE_SETTINGS, names)
    report = {
        "command": "python benchmarks/real_photos.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("out", "sheets")),
        "machine": f"{platform.processor() or platform.machine()}, torch threads {args.threads}, shared CPU (under "
                   "load)",
        "methods": {m: describe(s) for m, s in methods.items()},
        "margin_db": MARGIN_DB,
        "photos": {"summary": photo_summary, "cases": photo_rows},
        "faces": {"summary": face_summary, "cases": face_rows},
        "total_seconds": time.perf_counter() - start,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    if photo_summary:
        print("\n## Photos\n\n" + markdown(photo_summary, names))
    if face_summary:
        print("\n## Faces\n\n" + markdown(face_summary, names))
    print(f"\nwrote {args.out} and contact sheets under {args.sheets} ({report['total_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
