"""Where repaint keeps what it fetches or builds for a user: downloaded models and compiled kernels.

One folder, ``$REPAINT_HOME`` if set, else the platform's user cache folder (``~/.cache/repaint`` on Linux, following
``$XDG_CACHE_HOME``; ``~/Library/Caches/repaint`` on macOS; ``%LOCALAPPDATA%\\repaint\\Cache`` on Windows).
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

HOME_ENV = "REPAINT_HOME"

__all__ = ["HOME_ENV", "home_dir"]


def home_dir() -> Path:
    """The cache folder (not created here)."""
    value = os.environ.get(HOME_ENV)
    return Path(value).expanduser() if value else Path(platformdirs.user_cache_dir("repaint", appauthor=False))
