"""Fetching models: ``repaint download`` and the first use of a known model that is not on disk yet.

Three kinds of source, each through a well-kept client:

* a plain ``http(s)://`` URL through httpx: resumable (an HTTP ``Range`` request continues a cut transfer, in the same
  call up to ``retries`` times and on the next call), with a progress bar of bytes and speed;
* a Google Drive file, ``drive:FILE_ID``, through gdown (into a staging folder, moved into place once verified);
* a Hugging Face Hub model, ``hf:ORG/NAME[@REVISION]``, through huggingface_hub, into the Hub's own cache: its
  ``HF_HOME`` / ``HF_HUB_CACHE``, ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and token handling apply unchanged.

A file is written under a hidden temporary name beside its target, ``.NAME.part.SUFFIX``, kept when a transfer stops
so that the next call resumes it, and renamed to ``NAME`` only once verified: its size, its sha256 (given with
``--sha256``, published in the model table, or recorded beside the file at its first download as ``NAME.sha256``)
and a safe load (weights only, never unpickling code; strict keys and shapes for a known ADM model). A lock,
``.NAME.lock``, refuses a second download of the same file while one runs.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from ..home import home_dir
from .formats import CheckpointError, _shapes, describe_mismatch, expected_shapes, read_checkpoint
from .infer import detect_kind
from .presets import PRESETS, Preset, closest, default_model_path

__all__ = [
    "DownloadError", "OFFLINE_ENVS", "MIRROR_ENV", "HubId", "models_dir", "offline", "fetch", "fetch_url",
    "fetch_drive", "fetch_hub", "fetch_on_first_use", "find_on_disk", "check_checkpoint", "partial_path",
    "recorded_hash",
]

OFFLINE_ENVS = ("REPAINT_OFFLINE", "HF_HUB_OFFLINE")
MIRROR_ENV = "REPAINT_MIRROR"
RETRIES = 3                 # further tries within one call after a cut connection
RETRY_PAUSE = 1.0           # seconds before the first retry, doubled after each
CHUNK = 1 << 20
HUB_FILES = ["*.json", "*.safetensors", "*.bin"]   # what a diffusers UNet2DModel folder needs (no Flax/ONNX copies)


class DownloadError(RuntimeError):
    """A download that could not be completed or verified (one line; the CLI exits 1)."""


def models_dir() -> Path:
    """Where downloaded model files go: ``models/`` in the repaint cache folder (:func:`repaint.home.home_dir`)."""
    return home_dir() / "models"


def offline() -> bool:
    """Whether downloads are off: ``REPAINT_OFFLINE`` or ``HF_HUB_OFFLINE`` set to 1 / true / yes / on."""
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on") for name in OFFLINE_ENVS)


@dataclass(frozen=True)
class HubId:
    """``hf:ORG/NAME[@REVISION]``: a Hub model repository and an optional branch, tag or commit."""

    repo: str
    revision: str | None = None

    @classmethod
    def parse(cls, text: str) -> "HubId":
        body = text.removeprefix("hf:")
        repo, _, revision = body.partition("@")
        if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo) or (_ and not revision):
            raise CheckpointError(f"{text!r} is not a Hub model id; write hf:ORG/NAME or hf:ORG/NAME@REVISION")
        return cls(repo, revision or None)

    def __str__(self) -> str:
        return f"hf:{self.repo}" + (f"@{self.revision}" if self.revision else "")


# ----------------------------------------------------------------------------------------------------------------
# Names -> sources


def fetch(target: str, *, to: str | Path | None = None, sha256: str | None = None, mirror: str | None = None,
          retries: int = RETRIES, progress: bool = True) -> Path:
    """Fetch a model of the table (:data:`PRESETS`), an ``http(s)`` URL, ``drive:FILE_ID`` or ``hf:ORG/NAME[@REV]``;
    returns the final path (a file, or a diffusers folder for Hub models). ``to`` replaces :func:`models_dir`;
    ``mirror`` (default ``$REPAINT_MIRROR``) replaces the folder part of a known model's URL."""
    sha256 = _valid_hash(sha256)
    if target.startswith("hf:"):
        return fetch_hub(HubId.parse(target), to=to)
    if target.startswith("drive:"):
        return fetch_drive(target.removeprefix("drive:"), Path(to) if to else models_dir(), sha256=sha256)
    if target.startswith(("http://", "https://")):
        dest = (Path(to) if to else models_dir()) / _url_filename(target)
        return fetch_url(target, dest, sha256=sha256, check=check_checkpoint, retries=retries, progress=progress)
    if target not in PRESETS:
        raise CheckpointError(f"unknown model {target!r}{closest(target)}; `repaint models` lists the names, or give "
                              "an http(s):// URL, drive:FILE_ID or hf:ORG/NAME")
    return _fetch_preset(PRESETS[target], to, sha256, mirror, retries, progress)


def _fetch_preset(preset: Preset, to, sha256, mirror, retries, progress) -> Path:
    if preset.name == "default":
        return default_model_path()
    if preset.source.startswith("hf:"):
        return fetch_hub(HubId.parse(preset.source), to=to)
    if not preset.source:
        raise CheckpointError(f"{preset.name} needs {preset.filename}, which has no direct download: it is on "
                              f"{preset.published}; `repaint download drive:ID` fetches a Drive file under its own "
                              f"name; put {preset.filename} in the model cache's models/ folder, ./data/pretrained "
                              "or a folder named in $REPAINT_CHECKPOINTS")
    url = preset.source
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV)
    if mirror:
        url = mirror.rstrip("/") + "/" + preset.filename
    dest = (Path(to) if to else models_dir()) / preset.filename
    return fetch_url(url, dest, sha256=sha256 or preset.sha256, size=preset.size,
                     check=lambda path: check_checkpoint(path, preset), retries=retries, progress=progress)


def fetch_on_first_use(preset: Preset) -> Path:
    """A known model that is on no search folder: downloaded now, or, with downloads off, one line saying which
    command fetches it."""
    if offline():
        set_vars = " / ".join(name for name in OFFLINE_ENVS if os.environ.get(name))
        raise CheckpointError(f"model {preset.name!r} is not on disk and downloads are off ({set_vars}); fetch it "
                              f"with: repaint download {preset.name}")
    return fetch(preset.name)


def find_on_disk(preset: Preset, folders: list[Path]) -> Path | None:
    """Where ``preset``'s file (or Hub snapshot) already is, without any network access; None if nowhere."""
    if preset.name == "default":
        return default_model_path() if default_model_path().exists() else None
    if preset.source.startswith("hf:"):
        try:
            return _hub_snapshot(HubId.parse(preset.source), local_only=True)
        except Exception:  # not cached (or huggingface_hub missing): not on disk
            return None
    return next((folder / preset.filename for folder in folders if (folder / preset.filename).is_file()), None)


# ----------------------------------------------------------------------------------------------------------------
# Plain URLs


def partial_path(dest: Path) -> Path:
    """The temporary name a download of ``dest`` is written under: ``.NAME.part.SUFFIX`` (the suffix kept, so the
    load check reads it as the format it will be)."""
    return dest.with_name(f".{dest.stem}.part{dest.suffix}")


def recorded_hash(dest: Path) -> str | None:
    """The sha256 recorded at ``dest``'s first download (``NAME.sha256``, sha256sum's format), if any."""
    record = dest.with_name(dest.name + ".sha256")
    if not record.is_file():
        return None
    return record.read_text().split()[0].lower() if record.read_text().split() else None


def fetch_url(url: str, dest: Path, *, sha256: str | None = None, size: int | None = None,
              check: Callable[[Path], object] | None = None, retries: int = RETRIES, progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` (resuming ``partial_path(dest)``), verify it, rename it into place; ``dest``.

    Verification: ``size`` bytes if given, ``sha256`` (else the hash recorded at an earlier download), then
    ``check(path)`` (a :class:`CheckpointError` refuses the file). A file that fails is deleted; a transfer that
    stops is kept for the next call. A ``dest`` already present is checked against the known hash and returned.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _lock(dest):
        expected = sha256 or recorded_hash(dest)
        if dest.is_file():
            if expected and _sha256(dest) != expected:
                raise DownloadError(f"{dest} is on disk but its sha256 is not {expected}; delete it to download again")
            return dest
        part = partial_path(dest)
        _transfer(url, part, retries, progress)
        digest = _verify(url, part, expected, size, check)
        os.replace(part, dest)
        if not recorded_hash(dest):
            from ..files import atomic_write

            atomic_write(dest.with_name(dest.name + ".sha256"), f"{digest}  {dest.name}\n")
    return dest


@contextmanager
def _lock(dest: Path) -> Iterator[None]:
    """Hold ``.NAME.lock`` for the download; a second download of the same file fails at once (no waiting)."""
    from filelock import FileLock, Timeout

    path = dest.with_name(f".{dest.name}.lock")
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise DownloadError(f"another download of {dest.name} is running (lock {path}); wait for it to end") from None
    try:
        yield
    finally:  # no one waits on the lock (timeout 0), so removing it while held cannot let two downloads in
        with suppress(OSError):
            path.unlink()
        lock.release()


def _transfer(url: str, part: Path, retries: int, progress: bool) -> None:
    """Bring ``part`` to the whole file, retrying a cut connection ``retries`` times (pauses 1 s, 2 s, 4 s...)."""
    import httpx

    for attempt in range(retries + 1):
        try:
            return _get(url, part, progress)
        except KeyboardInterrupt:
            if part.exists():
                warnings.warn(f"{part.stat().st_size:,} bytes kept in {part}; run the same command again to resume",
                              stacklevel=2)
            raise
        except httpx.TransportError as error:
            reason = " ".join(str(error).split()) or type(error).__name__
            if attempt < retries:
                time.sleep(RETRY_PAUSE * 2 ** attempt)
    have = part.stat().st_size if part.exists() else 0
    kept = (f"{have:,} bytes kept in {part}; run the same command again to resume" if have
            else "nothing was written")
    raise DownloadError(f"{url}: {reason} ({retries + 1} tries); {kept}")


def _get(url: str, part: Path, progress: bool) -> None:
    """One GET of the rest of ``url`` (from ``part``'s current size on), appended to ``part``."""
    import httpx

    have = part.stat().st_size if part.exists() else 0
    headers = {"Accept-Encoding": "identity"}   # byte ranges count the bytes as stored, never a compressed stream
    if have:
        headers["Range"] = f"bytes={have}-"
    with httpx.Client(follow_redirects=True, timeout=httpx.Timeout(30.0)) as client:
        with client.stream("GET", url, headers=headers) as response:
            if response.status_code == 416 and have:   # nothing after what we have: the verification decides
                return
            _refuse(url, response)
            if response.status_code != 206:             # a whole file (the server ignores ranges): start again
                have = 0
            total = _total_size(response, have)
            _check_space(part.parent, None if total is None else total - have)
            _write(response, part, have, total, progress)
    if total is not None and part.stat().st_size < total:
        raise httpx.RemoteProtocolError("the connection closed before the end of the file")


def _write(response, part: Path, have: int, total: int | None, progress: bool) -> None:
    from tqdm import tqdm

    try:
        with open(part, "ab" if have else "wb") as file, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024, desc=part.name.lstrip("."),
            disable=not progress, leave=False,
        ) as bar:
            for chunk in response.iter_raw():  # as received: a cut keeps every byte that came
                file.write(chunk)
                bar.update(len(chunk))
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise DownloadError(f"the disk is full ({part.parent}); {part.stat().st_size:,} bytes kept in {part}: "
                                "free space and run the same command again to resume") from None
        raise


def _refuse(url: str, response) -> None:
    """A server error, or a web page instead of a file, ends the download before anything is written."""
    if response.status_code >= 400:
        hint = {401: " (access denied)", 403: " (access denied)", 404: " (no such file)"}.get(response.status_code, "")
        raise DownloadError(f"{url}: the server answered {response.status_code} {response.reason_phrase}{hint}")
    if response.headers.get("content-type", "").split(";")[0].strip().lower() in ("text/html", "application/xhtml+xml"):
        raise DownloadError(f"{url}: the server sent a web page, not a checkpoint (a login, quota or error page?)")


def _total_size(response, have: int) -> int | None:
    """The whole file's size: from ``Content-Range: bytes a-b/TOTAL`` of a 206, else ``Content-Length``."""
    if response.status_code == 206:
        match = re.match(r"bytes \d+-\d+/(\d+)", response.headers.get("content-range", ""))
        return int(match.group(1)) if match else None
    length = response.headers.get("content-length")
    return int(length) if length and length.isdigit() else None


def _check_space(folder: Path, needed: int | None) -> None:
    if needed is None:
        return
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise DownloadError(f"not enough disk space in {folder}: {needed:,} bytes needed, {free:,} free")


def _verify(url: str, part: Path, sha256: str | None, size: int | None, check) -> str:
    """The sha256 of a complete ``part`` that passed every check; otherwise ``part`` is deleted and the reason
    raised."""
    def refuse(reason: str) -> DownloadError:
        part.unlink(missing_ok=True)
        return DownloadError(f"{url}: {reason}; the download was deleted")

    if size is not None and part.stat().st_size != size:
        raise refuse(f"{part.stat().st_size:,} bytes instead of the published {size:,}")
    digest = _sha256(part)
    if sha256 and digest != sha256:
        raise refuse(f"sha256 {digest} is not the expected {sha256}")
    if check is not None:
        try:
            check(part)
        except CheckpointError as error:
            raise refuse(f"not a usable checkpoint ({' '.join(str(error).split())})") from None
    return digest


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _valid_hash(sha256: str | None) -> str | None:
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256.strip()):
        raise CheckpointError(f"--sha256 takes 64 hexadecimal digits, got {sha256!r}")
    return sha256.strip().lower() if sha256 else None


def _url_filename(url: str) -> str:
    name = unquote(Path(urlparse(url).path).name)
    if not name or name in (".", ".."):
        raise CheckpointError(f"{url} names no file; give a URL that ends in the file's name")
    return name


def check_checkpoint(path: Path, preset: Preset | None = None) -> str:
    """Read ``path`` as a checkpoint, weights only (a pickle that would run code is refused), and, for a known ADM
    model, compare every key and shape with ``preset``'s architecture; returns the kind ("unet" / "classifier")."""
    state_dict, _ = read_checkpoint(path)
    kind = detect_kind(state_dict)
    if preset is not None and preset.config is not None:
        problem = describe_mismatch(_shapes(state_dict), expected_shapes(preset.config))
        if problem:
            raise CheckpointError(f"the weights do not fit {preset.name}: {problem}")
    return kind


# ----------------------------------------------------------------------------------------------------------------
# Google Drive and the Hugging Face Hub


def fetch_drive(file_id: str, folder: Path, *, sha256: str | None = None) -> Path:
    """A Google Drive file through gdown, named as Drive names it, into ``folder``: downloaded (resumably) into the
    staging folder ``.drive-ID/``, verified as :func:`fetch_url` does, then moved into place."""
    try:
        import gdown
    except ImportError:
        raise DownloadError("Google Drive files need gdown: pip install 'repaint-inpaint[drive]'") from None
    if not re.fullmatch(r"[\w-]{10,}", file_id):
        raise CheckpointError(f"{file_id!r} is not a Google Drive file id")
    folder = Path(folder)
    staging = folder / f".drive-{file_id}"
    staging.mkdir(parents=True, exist_ok=True)
    try:
        with _lock(staging):
            dest = _drive_to(gdown, file_id, staging, folder, sha256)
    finally:  # a partial file stays in the staging folder for gdown to resume; an empty one goes
        with suppress(OSError):
            staging.rmdir()
    return dest


def _drive_to(gdown, file_id: str, staging: Path, folder: Path, sha256: str | None) -> Path:
    try:
        got = gdown.download(id=file_id, output=str(staging) + os.sep, quiet=False, resume=True)
    except Exception as error:  # gdown raises its own errors and requests' for quota pages, permissions, network
        raise DownloadError(f"drive:{file_id}: {' '.join(str(error).split())[:300]}") from None
    if not got:
        raise DownloadError(f"drive:{file_id}: gdown fetched nothing (a quota or permission page?)")
    dest = folder / Path(got).name
    digest = _verify(f"drive:{file_id}", Path(got), sha256 or recorded_hash(dest), None, check_checkpoint)
    os.replace(got, dest)
    from ..files import atomic_write

    atomic_write(dest.with_name(dest.name + ".sha256"), f"{digest}  {dest.name}\n")
    return dest


def fetch_hub(hub_id: HubId | str, *, to: str | Path | None = None) -> Path:
    """The folder of a Hub model (a diffusers ``UNet2DModel`` with its scheduler config): from the Hub's cache, or
    downloaded into it unless downloads are off (:func:`offline`). ``to`` copies it into that folder instead."""
    hub_id = HubId.parse(hub_id) if isinstance(hub_id, str) else hub_id
    local_only = offline()
    folder = _hub_snapshot(hub_id, local_only=local_only, to=to)
    from .diffusers_adapter import locate

    try:
        locate(folder)
    except CheckpointError as error:
        raise CheckpointError(f"{hub_id} is not a diffusers DDPM this tool runs: {error}") from None
    return folder


def _hub_snapshot(hub_id: HubId, local_only: bool, to: str | Path | None = None) -> Path:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub import errors
    except ImportError:
        raise CheckpointError("hf: models need huggingface_hub: pip install 'repaint-inpaint[diffusers]'") from None
    try:
        return Path(snapshot_download(hub_id.repo, revision=hub_id.revision, allow_patterns=HUB_FILES,
                                      local_files_only=local_only, local_dir=to))
    except errors.RepositoryNotFoundError:
        raise CheckpointError(f"{hub_id}: no such model on the Hub (or a private one: log in with `hf auth login` "
                              "or set HF_TOKEN)") from None
    except errors.RevisionNotFoundError:
        raise CheckpointError(f"{hub_id}: the model has no revision {hub_id.revision!r}") from None
    except errors.LocalEntryNotFoundError:
        if local_only:
            raise CheckpointError(f"{hub_id} is not in the Hugging Face cache and downloads are off "
                                  f"(REPAINT_OFFLINE / HF_HUB_OFFLINE); fetch it with: repaint download {hub_id}"
                                  ) from None
        raise DownloadError(f"{hub_id}: cannot reach the Hub ({_hub_endpoint()}) and the model is not cached"
                            ) from None
    except errors.HfHubHTTPError as error:
        raise DownloadError(f"{hub_id}: {' '.join(str(error).split())[:300]}") from None


def _hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")
