"""An evaluation's output folder: the manifest that says what was run (and refuses to mix two runs), the model's
identity, which images are finished (their metrics JSON is written last), and what is still pending."""

from __future__ import annotations

import hashlib
import json
import os
import torch
import warnings
from pathlib import Path
from collections.abc import Sequence
from dataclasses import dataclass
from .inputs import EvalError, MaskSource
from ..inpainter import Inpainter
from ..images import OutputDirs
from ..settings import SamplerSettings
from ..distributed import Shard
from ..files import atomic_write, remove_temporaries

MANIFEST = "manifest.json"


MANIFEST_VERSION = 1


def _digest_tensors(state: dict[str, torch.Tensor], limit: int = 1 << 20) -> str:
    """sha256 over every tensor's name and shape, and the bytes of the first ``limit`` bytes of weights."""
    h, taken = hashlib.sha256(), 0
    for name, t in state.items():
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        if taken < limit and t.numel():
            raw = t.detach().to("cpu").contiguous().view(-1).view(torch.uint8)[: limit - taken]
            h.update(raw.numpy().tobytes())
            taken += raw.numel()
    return h.hexdigest()


def model_identity(inpainter: Inpainter, path: str | os.PathLike | None = None) -> dict:
    """What identifies the model of a run: its config and a digest of its weights (first MB); file name and size
    are recorded as information when known."""
    ident = {"config": inpainter.config.to_dict(), "weights_sha256_1mb": _digest_tensors(inpainter.unet.state_dict()),
             "trained": inpainter.trained.to_dict()}
    if inpainter.classifier is not None:
        ident["classifier_sha256_1mb"] = _digest_tensors(inpainter.classifier.state_dict())
    if path is not None:
        ident["file"] = {"name": Path(path).name, "bytes": Path(path).stat().st_size}
    return ident


def model_with_identity(model: str | os.PathLike | Inpainter, device: str | torch.device,
               classifier: str | None = None, unet_config: dict | None = None) -> tuple[Inpainter, dict]:
    """(inpainter, identity) for a preset name, checkpoint file, "default" or an already loaded Inpainter."""
    if isinstance(model, Inpainter):
        return model, model_identity(model)
    from ..checkpoints import resolve_checkpoint

    path, _ = resolve_checkpoint(str(model))
    inpainter = Inpainter.load(str(model), classifier=classifier, device=device, unet_config=unet_config)
    return inpainter, model_identity(inpainter, path)


def _write_json(path: Path, data: dict) -> None:
    atomic_write(path, json.dumps(data, indent=1))


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, text)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _finished(setting_dir: Path, stem: str, seeds: list[int]) -> bool:
    """All sample files exist and the per-image JSON (written last) names exactly these seeds."""
    record = _read_json(setting_dir / "metrics" / f"{stem}.json")
    if record is None or [s["seed"] for s in record.get("samples", [])] != seeds:
        return False
    return all((setting_dir / s["file"]).is_file() for s in record["samples"])


def _outputs(setting_dir: Path, stem: str, seeds: list[int]) -> list[Path]:
    """Every file an image's run writes under its setting's folder."""
    dirs = OutputDirs.under(setting_dir)
    return [dirs.inpainted / f"{stem}_s{seed}.png" for seed in seeds] + \
        [dirs.gt / f"{stem}.png", dirs.gt_masked / f"{stem}.png", dirs.gt_keep_mask / f"{stem}.png",
         setting_dir / "metrics" / f"{stem}.json"]


@dataclass
class _Item:
    source: MaskSource
    stem: str
    index: int
    path: Path
    seeds: list[int]


def _manifest(images: list[Path], sources: list[MaskSource], settings: SamplerSettings, ident: dict, seed: int,
              mask_seed: int, n_samples: int, metrics: Sequence[str], lpips_id: str, fit: str,
              class_label: int | None, classifier_scale: float) -> dict:
    return {
        "version": MANIFEST_VERSION,
        "images_dir": str(images[0].parent.resolve()),
        "images": [p.name for p in images],
        "masks": {s.name: s.describe() for s in sources},
        "mask_seed": mask_seed,
        "seed": seed,
        "n_samples": n_samples,
        "sampler": settings.to_dict(),
        "model": ident,
        "metrics": list(metrics),
        "lpips": lpips_id,
        "fit": fit,
        "class_label": class_label,
        "classifier_scale": classifier_scale,
    }


_INFORMATION_ONLY = ("images_dir",)   # a moved image folder with the same files is the same run


def _differences(old: dict, new: dict) -> list[str]:
    keys = sorted(set(old) | set(new))
    diff = [k for k in keys if k not in _INFORMATION_ONLY and old.get(k) != new.get(k)]
    if "model" in diff and {k: v for k, v in old.get("model", {}).items() if k != "file"} == \
            {k: v for k, v in new["model"].items() if k != "file"}:
        diff.remove("model")   # the same weights from another file name
    return diff


def _check_manifest(out_dir: Path, manifest: dict, where: Shard) -> None:
    """Rank 0 compares with (or writes) OUT/manifest.json; every rank raises the same error."""
    problem = None
    if where.main:
        old = _read_json(out_dir / MANIFEST) if (out_dir / MANIFEST).exists() else None
        if (out_dir / MANIFEST).exists() and old is None:
            problem = f"{out_dir / MANIFEST} is unreadable"
        elif old is not None and _differences(old, manifest):
            problem = (f"{out_dir} holds a run with other settings (differs in: "
                       f"{', '.join(_differences(old, manifest))}); to start fresh choose a new output folder "
                       f"(--out) or delete {out_dir}")
        elif old is None:
            out_dir.mkdir(parents=True, exist_ok=True)
            _write_json(out_dir / MANIFEST, manifest)
    problem = where.agree(problem)
    if problem:
        raise EvalError(problem)


def _skip(setting_dir: Path, stem: str, index: int, source: str, reason: str) -> None:
    warnings.warn(f"skipping {source}: {reason}", stacklevel=3)
    _write_json(setting_dir / "skipped" / f"{stem}.json", {"image": stem, "index": index, "source": source,
                                                           "reason": reason})


def _pending(images: list[Path], sources: list[MaskSource], out_dir: Path, where: Shard, seeds_of) -> list[_Item]:
    """Unfinished (image, setting) pairs of this shard, image by image, so each image is read once."""
    items = []
    for index, path in enumerate(images):
        if not where.owns(index):
            continue
        for source in sources:
            setting_dir, seeds = out_dir / source.name, seeds_of(index)
            if _finished(setting_dir, path.stem, seeds):
                continue
            remove_temporaries(_outputs(setting_dir, path.stem, seeds))
            (setting_dir / "skipped" / f"{path.stem}.json").unlink(missing_ok=True)
            items.append(_Item(source, path.stem, index, path, seeds))
    return items
