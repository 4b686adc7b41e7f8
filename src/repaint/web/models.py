"""The model menu: which models a client may choose, by name only, and loading them once on first use.

The menu is fixed when the server starts: the bundled face model ("default"), every model of the table whose file
(or Hub snapshot) is already on disk (the search folders of :func:`repaint.checkpoints.search_dirs`; building the
menu downloads nothing), and the models named on the command line (files, model names, ``hf:`` ids). Each entry has
a one-line description.
A client sends a name from this menu; nothing a client sends is ever used as a path.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from ..checkpoints import PRESETS, CheckpointError, search_dirs
from ..checkpoints.download import find_on_disk

__all__ = ["ModelMenu", "discover_models", "describe_entry"]


def discover_models(files: Sequence[str | Path] = ()) -> dict[str, str]:
    """Menu name -> what :func:`repaint.api.load_inpainter` takes (``"default"``, a model name, ``hf:ORG/NAME`` or a
    file path). ``files`` are files, model names or ``hf:`` ids to offer besides those found on disk.

    A named file that does not exist is a one-line :class:`CheckpointError`; models not on disk are left out.
    """
    menu = {"default": "default"}
    folders = search_dirs()
    for name, preset in PRESETS.items():
        if preset.denoiser and name != "default" and find_on_disk(preset, folders) is not None:
            menu[name] = name
    for file in files:
        text = str(file)
        if text.startswith("hf:") or text in PRESETS:  # a model by name: fetched (if need be) when it is loaded
            if text in PRESETS and not PRESETS[text].denoiser:
                raise CheckpointError(f"{text} is a classifier, not a model to inpaint with")
            menu[text] = text
            continue
        path = Path(file).expanduser()
        if not path.exists():
            raise CheckpointError(f"model file {file} does not exist")
        name = path.stem
        while name in menu:  # two files with one stem: qualify by the parent folder, then number them
            name = f"{path.parent.name}/{path.stem}" if "/" not in name else f"{name}'"
        menu[name] = str(path.resolve())
    return menu


def describe_entry(source: str) -> str:
    """One line about a menu entry: the model table's description, or the file's name."""
    if source in PRESETS:
        preset = PRESETS[source]
        return preset.description.split(":")[0] if preset.name == "default" else preset.description
    if source.startswith("hf:"):
        return f"Hugging Face Hub model {source.removeprefix('hf:')}"
    return f"checkpoint file {Path(source).name}"


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

    @property
    def descriptions(self) -> dict[str, str]:
        """Menu name -> one line about the model (:func:`describe_entry`)."""
        return {name: describe_entry(source) for name, source in self.entries.items()}

    def description(self, name: str) -> str:
        """One line about the model called ``name``: the preset's own words, or where a file came from."""
        return describe_entry(self.entries[name])

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
