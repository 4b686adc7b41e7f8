"""`repaint models`, `repaint download` and `--model NAME|hf:ORG/NAME`: fetched from an HTTP server these tests start
on 127.0.0.1 (ranges, cut connections, errors, web pages) and from a Hugging Face cache the tests lay out, offline."""

import fcntl
import hashlib
import http.server
import pickle
import threading
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from repaint.checkpoints import PRESETS, Preset, save_checkpoint
from repaint.checkpoints import download as dl
from repaint.cli import cli
from repaint.models.config import DiffusionSettings, UNetConfig, build_model

TINY = UNetConfig(image_size=16, model_channels=32, num_res_blocks=1, attention_resolutions=(8,), channel_mult=(1, 2),
                  learn_sigma=True)
FAST = ["--steps", "4", "--jump-length", "2", "--jump-n-sample", "2", "--device", "cpu", "--sampler", "repaint"]


# -- the server ---------------------------------------------------------------------------------------------------

class Files(http.server.ThreadingHTTPServer):
    """Serves ``files`` (name -> bytes) with ranges; ``cut`` (name -> bytes) closes the next response of that file
    after so many bytes; ``status`` (name -> code) and ``html`` (names) answer with an error or a web page."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.files, self.cut, self.status, self.html, self.ranges = {}, {}, {}, set(), []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request, client_address):
        """A client that hangs up (as the refusing downloader does) is expected here, not a fault to print: printed,
        it would land in the output of the command under test."""


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        name = self.path.lstrip("/")
        server = self.server
        if name in server.status or name not in server.files:
            return self.send_error(server.status.get(name, 404))
        if name in server.html:
            return self._send(200, b"<html><body>Quota exceeded</body></html>", {"Content-Type": "text/html"})
        data = server.files[name]
        start = 0
        header = self.headers.get("Range")
        server.ranges.append(header)
        if header:
            start = int(header.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                return self.send_error(416)
        body = data[start:]
        headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
        if header:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        self._send(206 if header else 200, body, headers, cut=server.cut.pop(name, None))

    def _send(self, code, body, headers, cut=None):
        self.send_response(code)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[:cut] if cut is not None else body)
        if cut is not None:
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)


@pytest.fixture
def server():
    httpd = Files()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def tiny_bytes(tmp_path_factory, seed=0) -> bytes:
    torch.manual_seed(seed)
    model = build_model(TINY)
    with torch.no_grad():
        for p in model.parameters():  # ADM zero-initialises its output convs: perturb so the output is not zero
            p.add_(torch.randn_like(p) * 0.02)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(model, TINY, path, diffusion=DiffusionSettings(steps=1000, learn_sigma=True))
    return path.read_bytes()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> bytes:
    return tiny_bytes(tmp_path_factory)


@pytest.fixture(autouse=True)
def no_pauses(monkeypatch, tmp_path):
    monkeypatch.setattr(dl, "RETRY_PAUSE", 0.0)
    monkeypatch.setenv("REPAINT_HOME", str(tmp_path / "home"))
    for name in ("REPAINT_OFFLINE", "HF_HUB_OFFLINE", "REPAINT_MIRROR"):
        monkeypatch.delenv(name, raising=False)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("repaint: error:")]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# -- repaint models ----------------------------------------------------------------------------------------------

def test_models_lists_the_papers_openais_and_the_hub_models():
    result = run("models")
    assert result.exit_code == 0, result.output
    for name in ("default", "celeba256", "places256", "imagenet256", "imagenet256_classifier", "lsun_bedroom",
                 "ddpm-celebahq256", "ddpm-church256", "ddpm-bedroom256", "ddpm-cat256"):
        assert f"\n{name} " in "\n" + result.output
    assert "hf:google/ddpm-ema-celebahq-256" in result.output and "diffusers DDPM" in result.output
    bundled = next(line for line in result.output.splitlines() if line.startswith("default "))
    assert "face64.safetensors" in bundled and "lanpaint" in bundled


# -- repaint download URL ----------------------------------------------------------------------------------------

def test_download_writes_the_verified_file_and_prints_its_path_last(server, tiny, tmp_path):
    server.files["tiny.safetensors"] = tiny
    result = run("download", f"{server.url}/tiny.safetensors", "--to", tmp_path / "m")
    assert result.exit_code == 0, result.output
    final = Path(result.stdout.strip().splitlines()[-1])
    assert final == tmp_path / "m" / "tiny.safetensors" and sha(final.read_bytes()) == sha(tiny)
    assert files_in(tmp_path / "m") == ["tiny.safetensors", "tiny.safetensors.sha256"]
    assert (tmp_path / "m" / "tiny.safetensors.sha256").read_text().split()[0] == sha(tiny)


def test_a_cut_transfer_resumes_on_the_next_call_with_the_same_bytes(server, tiny, tmp_path):
    server.files["tiny.safetensors"] = tiny
    server.cut["tiny.safetensors"] = len(tiny) // 2
    url, folder = f"{server.url}/tiny.safetensors", tmp_path / "m"
    first = run("download", url, "--to", folder, "--retries", "0")
    assert first.exit_code == 1 and "run the same command again to resume" in error_line(first)
    part = dl.partial_path(folder / "tiny.safetensors")
    assert part.stat().st_size == len(tiny) // 2 and not (folder / "tiny.safetensors").exists()
    second = run("download", url, "--to", folder)
    assert second.exit_code == 0, second.output
    assert server.ranges[-1] == f"bytes={len(tiny) // 2}-"
    assert sha((folder / "tiny.safetensors").read_bytes()) == sha(tiny) and not part.exists()


def test_a_cut_transfer_is_resumed_within_the_call(server, tiny, tmp_path):
    server.files["tiny.safetensors"] = tiny
    server.cut["tiny.safetensors"] = 1000
    result = run("download", f"{server.url}/tiny.safetensors", "--to", tmp_path)
    assert result.exit_code == 0, result.output
    assert server.ranges == [None, "bytes=1000-"]
    assert sha((tmp_path / "tiny.safetensors").read_bytes()) == sha(tiny)


def test_a_wrong_sha256_leaves_nothing_behind(server, tiny, tmp_path):
    server.files["tiny.safetensors"] = tiny
    result = run("download", f"{server.url}/tiny.safetensors", "--to", tmp_path / "m", "--sha256", "0" * 64)
    assert result.exit_code == 1 and "is not the expected" in error_line(result)
    assert files_in(tmp_path / "m") == []


def test_the_hash_recorded_at_the_first_download_is_checked_later(server, tiny, tmp_path):
    server.files["tiny.safetensors"] = tiny
    url = f"{server.url}/tiny.safetensors"
    assert run("download", url, "--to", tmp_path).exit_code == 0
    (tmp_path / "tiny.safetensors").unlink()
    server.files["tiny.safetensors"] = tiny_bytes_changed = tiny[:-8] + b"\0" * 8
    result = run("download", url, "--to", tmp_path)
    assert result.exit_code == 1 and "is not the expected" in error_line(result), tiny_bytes_changed[:0]
    assert files_in(tmp_path) == ["tiny.safetensors.sha256"]


@pytest.mark.parametrize("code, words", [(404, "404 Not Found (no such file)"), (403, "access denied"),
                                         (500, "500 Internal Server Error")])
def test_server_errors_are_one_line_and_write_nothing(server, tmp_path, code, words):
    server.status["x.pt"] = code
    result = run("download", f"{server.url}/x.pt", "--to", tmp_path / "m")
    assert result.exit_code == 1 and words in error_line(result)
    assert files_in(tmp_path / "m") == []


def test_a_web_page_instead_of_the_file_is_refused(server, tmp_path):
    server.files["x.pt"] = b"unused"
    server.html.add("x.pt")
    result = run("download", f"{server.url}/x.pt", "--to", tmp_path / "m")
    assert result.exit_code == 1 and "web page, not a checkpoint" in error_line(result)
    assert files_in(tmp_path / "m") == []


class Code:
    def __reduce__(self):
        return (print, ("this pickle runs code",))


@pytest.mark.parametrize("name, make", [
    ("page.pt", lambda tiny: b"<html>not a checkpoint</html>"),        # HTML sent as a binary file
    ("trunc.safetensors", lambda tiny: tiny[: len(tiny) // 3]),         # a truncated file, served whole
    ("code.pt", lambda tiny: pickle.dumps({"w": Code()})),             # a pickle that would run code
])
def test_files_that_are_not_checkpoints_are_refused(server, tiny, tmp_path, name, make):
    server.files[name] = make(tiny)
    result = run("download", f"{server.url}/{name}", "--to", tmp_path / "m")
    assert result.exit_code == 1 and "not a usable checkpoint" in error_line(result)
    assert "this pickle runs code" not in result.output
    assert files_in(tmp_path / "m") == []


def test_no_network_is_one_line(tmp_path):
    import socket

    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run("download", f"http://127.0.0.1:{port}/x.pt", "--to", tmp_path / "m", "--retries", "1")
    assert result.exit_code == 1 and "(2 tries); nothing was written" in error_line(result)
    assert files_in(tmp_path / "m") == []


def test_a_second_download_of_the_same_file_is_refused(server, tiny, tmp_path):
    server.files["tiny.safetensors"] = tiny
    with open(tmp_path / ".tiny.safetensors.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = run("download", f"{server.url}/tiny.safetensors", "--to", tmp_path)
    assert result.exit_code == 1 and "another download of tiny.safetensors is running" in error_line(result)
    assert not (tmp_path / "tiny.safetensors").exists()


def test_a_full_disk_is_refused_before_writing(server, tiny, tmp_path, monkeypatch):
    import collections
    import shutil

    server.files["tiny.safetensors"] = tiny
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 100, 100))
    result = run("download", f"{server.url}/tiny.safetensors", "--to", tmp_path / "m")
    assert result.exit_code == 1 and "not enough disk space" in error_line(result)
    assert files_in(tmp_path / "m") == []


@pytest.mark.parametrize("args, words", [
    (["celebahq"], "unknown model 'celebahq' (did you mean"),
    (["https://example.org/x.pt", "--sha256", "abc"], "--sha256 takes 64 hexadecimal digits"),
    (["hf:not an id"], "is not a Hub model id"),
])
def test_bad_names_are_one_line(args, words):
    result = run("download", *args)
    assert result.exit_code == 2 and words in error_line(result)


def test_ctrl_c_exits_130_and_keeps_the_partial_file(server, tiny, tmp_path, monkeypatch):
    server.files["tiny.safetensors"] = tiny
    real_write = dl._write

    def interrupted(response, part, have, total, progress):
        with open(part, "wb") as file:
            file.write(b"x" * 10)
        raise KeyboardInterrupt

    monkeypatch.setattr(dl, "_write", interrupted)
    result = run("download", f"{server.url}/tiny.safetensors", "--to", tmp_path)
    assert result.exit_code == 130 and real_write
    assert "10 bytes kept in" in result.stderr and "repaint: interrupted" in result.stderr
    assert files_in(tmp_path) == [dl.partial_path(tmp_path / "tiny.safetensors").name]


# -- known names: mirror, first use, offline -----------------------------------------------------------------------

@pytest.fixture
def tiny_preset(monkeypatch, server, tiny):
    """A model of the table served by the test server (the real rows are gigabytes)."""
    preset = Preset("tiny16", "tiny16.safetensors", "a 16x16 test model", "the test server", TINY,
                    DiffusionSettings(steps=1000, learn_sigma=True), source="https://example.invalid/tiny16.safetensors",
                    sha256=sha(tiny), size=len(tiny))
    monkeypatch.setitem(PRESETS, "tiny16", preset)
    monkeypatch.setenv("REPAINT_MIRROR", server.url)
    server.files["tiny16.safetensors"] = tiny
    return preset


def test_a_known_name_downloads_through_the_mirror_into_the_cache(tiny_preset, tmp_path):
    result = run("download", "tiny16")
    assert result.exit_code == 0, result.output
    final = Path(result.stdout.strip().splitlines()[-1])
    assert final == tmp_path / "home" / "models" / "tiny16.safetensors"
    listed = next(line for line in run("models").output.splitlines() if line.startswith("tiny16 "))
    assert str(final) in listed


def test_a_known_name_that_fails_its_strict_key_check_is_refused(tiny_preset, server, tmp_path):
    server.files["tiny16.safetensors"] = tiny_bytes_other = _other_architecture(tmp_path)
    PRESETS["tiny16"] = Preset(**{**tiny_preset.__dict__, "sha256": None, "size": None})
    result = run("download", "tiny16")
    assert result.exit_code == 1 and "do not fit tiny16" in error_line(result), tiny_bytes_other[:0]
    assert files_in(tmp_path / "home" / "models") == []


def _other_architecture(tmp_path) -> bytes:
    config = TINY.replace(model_channels=64)
    path = save_checkpoint(build_model(config), config, tmp_path / "other.safetensors")
    return path.read_bytes()


def test_model_name_is_downloaded_on_first_use_and_inpaints(tiny_preset, tmp_path):
    image, mask = _image_and_mask(tmp_path)
    result = run("inpaint", image, mask, "--model", "tiny16", "--out", tmp_path / "out", *FAST)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "home" / "models" / "tiny16.safetensors").is_file()
    assert any(p.suffix == ".png" for p in (tmp_path / "out").rglob("*"))


@pytest.mark.parametrize("variable", ["REPAINT_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_names_the_command_that_fetches_the_model(tiny_preset, tmp_path, monkeypatch, variable):
    monkeypatch.setenv(variable, "1")
    image, mask = _image_and_mask(tmp_path)
    result = run("inpaint", image, mask, "--model", "tiny16", "--out", tmp_path / "out", *FAST)
    assert result.exit_code == 2 and "fetch it with: repaint download tiny16" in error_line(result)
    assert not (tmp_path / "out").exists()


def test_unknown_model_name_suggests_the_closest(tmp_path):
    image, mask = _image_and_mask(tmp_path)
    result = run("inpaint", image, mask, "--model", "celeba", "--out", tmp_path / "out", *FAST)
    assert result.exit_code == 2 and "did you mean 'celeba256'" in error_line(result)


def _image_and_mask(tmp_path):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "image.png")
    mask = np.full((16, 16), 255, np.uint8)
    mask[4:12, 4:12] = 0
    Image.fromarray(mask).save(tmp_path / "mask.png")
    return tmp_path / "image.png", tmp_path / "mask.png"


# -- hf: models from a Hugging Face cache, offline -----------------------------------------------------------------

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny):
    """A diffusers export of the tiny model: what a Hub DDPM repository holds."""
    pytest.importorskip("diffusers")
    from repaint.checkpoints.diffusers_export import export_diffusers

    root = tmp_path_factory.mktemp("export")
    (root / "tiny.safetensors").write_bytes(tiny)
    return export_diffusers(root / "tiny.safetensors", root / "folder")


def lay_out_hub_cache(cache: Path, repo: str, folder: Path) -> Path:
    """``folder``'s files as huggingface_hub caches a repository: blobs named by hash, a snapshot of symlinks to
    them, and refs/main naming the snapshot's commit."""
    storage = cache / ("models--" + repo.replace("/", "--"))
    for file in (p for p in folder.rglob("*") if p.is_file()):
        blob = storage / "blobs" / sha(file.read_bytes())
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(file.read_bytes())
        link = storage / "snapshots" / COMMIT / file.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("../" * len(file.relative_to(folder).parts), "../blobs", blob.name))
    (storage / "refs").mkdir(parents=True, exist_ok=True)
    (storage / "refs" / "main").write_text(COMMIT)
    return storage / "snapshots" / COMMIT


@pytest.fixture
def hub_cache(tmp_path, monkeypatch, exported):
    import huggingface_hub.constants

    cache = tmp_path / "hf"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    lay_out_hub_cache(cache, "testorg/tiny-ddpm", exported)
    return cache


@pytest.mark.parametrize("model", ["hf:testorg/tiny-ddpm", f"hf:testorg/tiny-ddpm@{COMMIT}"])
def test_hf_model_from_the_hub_cache_inpaints_offline(hub_cache, tmp_path, model):
    image, mask = _image_and_mask(tmp_path)
    result = run("inpaint", image, mask, "--model", model, "--out", tmp_path / "out", *FAST)
    assert result.exit_code == 0, result.output
    assert any(p.suffix == ".png" for p in (tmp_path / "out").rglob("*"))


def test_hf_download_prints_the_snapshot_folder(hub_cache):
    result = run("download", "hf:testorg/tiny-ddpm")
    assert result.exit_code == 0, result.output
    assert Path(result.stdout.strip().splitlines()[-1]) == (
        hub_cache / "models--testorg--tiny-ddpm" / "snapshots" / COMMIT).resolve()


def test_a_hub_model_of_the_table_is_on_disk_when_cached(hub_cache, exported):
    lay_out_hub_cache(hub_cache, "google/ddpm-ema-church-256", exported)
    listed = next(line for line in run("models").output.splitlines() if line.startswith("ddpm-church256 "))
    assert "models--google--ddpm-ema-church-256" in listed
    result = run("download", "ddpm-church256")
    assert result.exit_code == 0 and "models--google--ddpm-ema-church-256" in result.stdout.splitlines()[-1]


def test_hf_errors_are_one_line(hub_cache, tmp_path):
    (tmp_path / "readme-only").mkdir()
    (tmp_path / "readme-only" / "README.md").write_text("no model here")
    lay_out_hub_cache(hub_cache, "testorg/no-unet", tmp_path / "readme-only")
    missing = run("download", "hf:testorg/missing")
    assert missing.exit_code == 2
    assert "not in the Hugging Face cache and downloads are off" in error_line(missing)
    assert "repaint download hf:testorg/missing" in error_line(missing)
    no_unet = run("download", "hf:testorg/no-unet")
    assert no_unet.exit_code == 2 and "is not a diffusers DDPM this tool runs" in error_line(no_unet)


def test_python_api_and_web_menu_take_hf_ids(hub_cache, tmp_path):
    import numpy as np

    from repaint.api import load_inpainter
    from repaint.web.models import ModelMenu, discover_models

    inpainter = load_inpainter("hf:testorg/tiny-ddpm", device="cpu")
    assert inpainter.image_size == 16
    menu = discover_models(["hf:testorg/tiny-ddpm"])
    assert menu["hf:testorg/tiny-ddpm"] == "hf:testorg/tiny-ddpm"
    assert ModelMenu(menu).descriptions["hf:testorg/tiny-ddpm"] == "Hugging Face Hub model testorg/tiny-ddpm"
    with torch.no_grad():
        assert np.isfinite(inpainter.unet(torch.zeros(1, 3, 16, 16), torch.tensor([10])).numpy()).all()


def test_the_web_menu_lists_models_on_disk_and_never_downloads(tiny_preset, server, tmp_path):
    from repaint.web.models import ModelMenu, discover_models

    assert "tiny16" not in discover_models() and server.ranges == []
    assert run("download", "tiny16").exit_code == 0
    menu = discover_models()
    assert menu["tiny16"] == "tiny16" and ModelMenu(menu).descriptions["tiny16"] == "a 16x16 test model"


# -- Google Drive through gdown (a stand-in module: no network here) -----------------------------------------------

class FakeGdown:
    """gdown's ``download(id=, output=, quiet=, resume=)``: writes ``data`` under Drive's file name in ``output``."""

    def __init__(self, name, data=None, error=None):
        self.name, self.data, self.error = name, data, error

    def download(self, id, output, quiet, resume):
        if self.error:
            raise self.error
        path = Path(output) / self.name
        path.write_bytes(self.data)
        return str(path)


def test_a_drive_file_is_verified_and_moved_into_place(monkeypatch, tiny, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "gdown", FakeGdown("celeba256_250000.safetensors", tiny))
    result = run("download", "drive:1abcdefghijklmnop", "--to", tmp_path)
    assert result.exit_code == 0, result.output
    assert Path(result.stdout.strip().splitlines()[-1]) == tmp_path / "celeba256_250000.safetensors"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["celeba256_250000.safetensors",
                                                           "celeba256_250000.safetensors.sha256"]


@pytest.mark.parametrize("fake, words", [
    (FakeGdown("x.pt", b"<html>Google Drive - Quota exceeded</html>"), "not a usable checkpoint"),
    (FakeGdown("x.pt", error=RuntimeError("Too many users have viewed or downloaded this file recently.\nTry later")),
     "Too many users have viewed or downloaded this file recently. Try later"),
])
def test_drive_quota_pages_are_one_line_and_leave_nothing(monkeypatch, tmp_path, fake, words):
    import sys

    monkeypatch.setitem(sys.modules, "gdown", fake)
    result = run("download", "drive:1abcdefghijklmnop", "--to", tmp_path / "m")
    assert result.exit_code == 1 and words in error_line(result)
    assert files_in(tmp_path / "m") == [] and list((tmp_path / "m").iterdir()) == []


def test_the_papers_drive_models_name_their_file_ids():
    result = run("download", "celeba256")
    assert result.exit_code == 2
    assert "1norNWWGYP3EZ_o05DmoW1ryKuKMmhlCX" in error_line(result) and "celeba256_250000.pt" in error_line(result)
