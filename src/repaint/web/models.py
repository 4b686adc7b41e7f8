"""The model menu: which models a client may choose, by name only, and loading them once on first use.

The menu is fixed when the server starts: the bundled face model ("default"), every official preset whose file is
found on disk (the search folders of :func:`repaint.checkpoints.resolve_checkpoint`), and the files named on the
command line.
A client sends a name from this menu; nothing a client sends is ever used as a path.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from ..checkpoints import resolve_checkpoint
from ..checkpoints import PRESETS, CheckpointError

__all__ = ["ModelMenu", "discover_models", "FACE_NOTICE"]

FACE_NOTICE = ("The bundled model is a small 64x64 demo trained on faces: it fills faces plausibly and little else, "
               "and a larger photo is filled through 64x64 windows around the hole.")


def discover_models(files: Sequence[str | Path] = ()) -> dict[str, str]:
    """Menu name -> what :func:`repaint.api.load_inpainter` takes (``"default"``, a preset name or a file path).

    A named file that does not exist is a one-line :class:`CheckpointError`; presets whose file is absent are left out.
    """
    menu = {"default": "default"}
    for name, preset in PRESETS.items():
        if preset.kind != "unet":
            continue
        try:
            resolve_checkpoint(name)
        except CheckpointError:
            continue
        menu[name] = name
    for file in files:
        path = Path(file).expanduser()
        if not path.exists():
            raise CheckpointError(f"model file {file} does not exist")
        name = path.stem
        while name in menu:  # two files with one stem: qualify by the parent folder, then number them
            name = f"{path.parent.name}/{path.stem}" if "/" not in name else f"{name}'"
        menu[name] = str(path.resolve())
    return menu


class ModelMenu:
    """Menu names -> loaded inpainters, each loaded on first use and kept (one load at a time)."""

    def __init__(self, entries: dict[str, str], device: str = "auto") -> None:
        self.entries = dict(entries)
        self.device = device
        self._loaded: dict[str, object] = {}
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        return list(self.entries)

    def notice(self, name: str) -> str | None:
        """What a person should know before running ``name`` on their photo, if anything."""
        return FACE_NOTICE if self.entries.get(name) == "default" else None

    def description(self, name: str) -> str:
        """One line about the model called ``name``: the preset's own words, or where a file came from."""
        source = self.entries[name]
        if source in PRESETS:
            return PRESETS[source].description.replace("`", "")
        return f"checkpoint file {Path(source).name}, named when the server started"

    def loaded(self, name: str):
        """The inpainter called ``name`` if it is loaded already, else None (nothing is loaded here)."""
        with self._lock:
            return self._loaded.get(name)

    def get(self, name: str):
        """The :class:`repaint.inpainter.Inpainter` called ``name``; ValueError for a name not on the menu."""
        if name not in self.entries:
            raise ValueError(f"unknown model; this server offers: {', '.join(self.entries)}")
        with self._lock:
            if name not in self._loaded:
                from ..api import load_inpainter

                self._loaded[name] = load_inpainter(self.entries[name], device=self.device)
            return self._loaded[name]
