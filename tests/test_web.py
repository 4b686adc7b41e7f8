"""The web server's HTTP API, limits and safety: bad uploads get an error and the server stays up; a full queue
answers "busy"; no client-supplied path reaches the file system. (The page itself: test_web_browser.py.)"""

from __future__ import annotations

import io
import re
import select
import socket
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from web_server import SHORT, alive, running_server

from repaint.cli import cli
from repaint.checkpoints import CheckpointError
from repaint.web.app import editor_arrays
from repaint.web.limits import Busy, Limits, RunGate, TooLarge, UploadError, decode_image, decode_mask
from repaint.web.models import ModelMenu, discover_models
from repaint.web.runner import RunOptions, Runner

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FACE = (EXAMPLES / "face.png").read_bytes()
FACE_MASK = (EXAMPLES / "face_mask.png").read_bytes()


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _array(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _post(url: str, image: bytes = FACE, mask: bytes = FACE_MASK, timeout: float = 60, **fields) -> httpx.Response:
    data = {**SHORT, **{k: str(v) for k, v in fields.items()}}
    files = {"image": ("image.png", image, "image/png"), "mask": ("mask.png", mask, "image/png")}
    return httpx.post(f"{url}/api/inpaint", files=files, data=data, timeout=timeout)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("web")) as url:
        yield url


@pytest.fixture(scope="module")
def tight_server(tmp_path_factory):
    """Small limits: 40 kB uploads, 100x100 pixels, no waiting room (one run, nothing queued)."""
    with running_server(tmp_path_factory.mktemp("tight"), max_upload_bytes=40_000, max_pixels=100 * 100,
                        max_queue=0, max_calls=100) as url:
        yield url


# ---------------------------------------------------------------------------------------------------------------
# the HTTP API
# ---------------------------------------------------------------------------------------------------------------

def test_inpaint_returns_a_png_that_differs_from_the_photo_only_in_the_hole(server):
    response = _post(server, seed=3)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-repaint-calls"] == "4" and response.headers["x-repaint-seeds"] == "3"
    out, face = _array(response.content), _array(FACE)
    keep = _array(FACE_MASK)[..., 0] >= 128
    assert out.shape == face.shape
    assert np.array_equal(out[keep], face[keep])
    assert np.abs(out[~keep].astype(int) - face[~keep]).mean() > 2  # the hole was filled with something new
    again = _post(server, seed=3)
    assert again.content == response.content  # the seed fixes the sample


def test_a_photo_of_another_size_comes_back_at_its_own_size(server):
    photo = np.asarray(Image.open(io.BytesIO(FACE)).resize((150, 100), Image.BICUBIC))
    keep = np.full((100, 150), 255, np.uint8)
    keep[40:60, 60:100] = 0
    response = _post(server, image=_png(photo), mask=_png(keep))
    assert response.status_code == 200, response.text
    out = _array(response.content)
    assert out.shape == (100, 150, 3)
    outside = keep == 255
    assert np.array_equal(out[outside], photo[outside]) and not np.array_equal(out[~outside], photo[~outside])


def test_the_fit_field_chooses_how_the_photo_meets_the_model(server):
    """A 150x100 photo with a 40x20 hole: auto tiles it at the photo's resolution, resize fills it at 64x64; both
    keep every known pixel."""
    photo = np.asarray(Image.open(io.BytesIO(FACE)).resize((150, 100), Image.BICUBIC))
    keep = np.full((100, 150), 255, np.uint8)
    keep[40:60, 60:100] = 0
    outs = {}
    for fit in ("auto", "resize"):
        response = _post(server, image=_png(photo), mask=_png(keep), fit=fit, seed=2)
        assert response.status_code == 200, response.text
        outs[fit] = _array(response.content)
        assert np.array_equal(outs[fit][keep == 255], photo[keep == 255])
    assert not np.array_equal(outs["auto"], outs["resize"])


def test_invert_mask_reads_white_as_the_hole(server):
    inverted = _png(255 - _array(FACE_MASK))
    plain = _post(server, seed=1)
    flipped = _post(server, mask=inverted, invert_mask="true", seed=1)
    assert flipped.status_code == 200 and flipped.content == plain.content


def test_several_samples_come_back_as_a_zip_of_pngs(server):
    response = _post(server, n_samples=2, seed=7)
    assert response.status_code == 200 and response.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert sorted(archive.namelist()) == ["image_s7.png", "image_s8.png"]   # named after the upload
        a, b = (_array(archive.read(n)) for n in ("image_s7.png", "image_s8.png"))
    assert response.headers["content-disposition"] == 'attachment; filename="image_samples.zip"'
    assert a.shape == b.shape == (64, 64, 3) and not np.array_equal(a, b)


def test_models_lists_the_menu_with_descriptions_and_the_choices(server):
    info = httpx.get(f"{server}/api/models", timeout=10).json()
    assert info["models"][0]["name"] == "default" and "64x64 faces" in info["models"][0]["description"]
    assert all(m["description"] and "\n" not in m["description"] for m in info["models"])
    assert "repaint" in info["samplers"] and {"fast", "paper", "custom"} <= set(info["schedules"])
    assert info["fits"][0] == "auto" and {"tile", "crop", "resize"} <= set(info["fits"])
    assert info["max_calls"] == Limits().max_calls


def test_the_openapi_schema_documents_the_error_answers_not_422(server):
    spec = httpx.get(f"{server}/api/openapi.json", timeout=10).json()
    answers = spec["paths"]["/api/inpaint"]["post"]["responses"]
    assert {"200", "400", "413", "503"} <= set(answers) and "422" not in answers
    assert answers["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    models = spec["paths"]["/api/models"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert models["$ref"].endswith("/ModelsInfo")


@pytest.mark.parametrize("fields, message", [
    (dict(image=b"this is not an image"), "not an image"),
    (dict(image=FACE[: len(FACE) // 2]), "cannot read image"),
    (dict(image=b""), "empty"),
    (dict(mask=_png(np.full((32, 64), 255, np.uint8))), "same size"),
    (dict(mask=_png(np.full((64, 64), 255, np.uint8))), "nothing to fill"),
    (dict(model="../../etc/passwd"), "unknown model"),
    (dict(model=str(EXAMPLES / "face.png")), "unknown model"),
    (dict(sampler="nope"), "unknown sampler"),
    (dict(schedule="slow"), "unknown schedule"),
    (dict(fit="shrink"), "unknown fit"),
    (dict(n_samples=99), "number of samples"),
    (dict(steps=1), "steps must be at least 2"),
    (dict(class_label=3), "class label"),
    (dict(steps=100000), "steps (T) must be at most 1,000 for this model"),
    (dict(n_samples="abc"), "n_samples must be a whole number"),
    (dict(seed="1.5e9x"), "seed must be a whole number"),
    (dict(invert_mask="perhaps"), "invert_mask must be true or false"),
])
def test_bad_requests_get_a_one_line_error_and_the_server_stays_up(server, fields, message):
    response = _post(server, **fields)
    assert response.status_code == 400, response.text[:300]
    error = response.json()["error"]
    assert message in error and "\n" not in error and "Traceback" not in error
    assert set(response.json()) == {"error"}
    for sent in fields.values():  # the answer never echoes what was sent
        assert not isinstance(sent, str) or len(sent) < 4 or sent not in error
    assert alive(server)


def test_a_request_without_a_mask_is_a_400_that_names_the_field(server):
    response = httpx.post(f"{server}/api/inpaint", files={"image": ("a.png", FACE, "image/png")},
                          data={"n_samples": "lots"}, timeout=10)
    assert response.status_code == 400
    assert response.json() == {"error": "mask is missing; n_samples must be a whole number"}
    assert alive(server)


def test_unknown_routes_and_methods_answer_in_the_same_shape(server):
    assert httpx.get(f"{server}/api/nothing", timeout=10).json() == {"error": "Not Found"}
    response = httpx.get(f"{server}/api/inpaint", timeout=10)
    assert response.status_code in (404, 405) and set(response.json()) == {"error"}


def test_a_client_that_disconnects_cancels_its_run(server):
    with pytest.raises(httpx.ReadTimeout):   # the paper's 2,410 calls: minutes on a CPU; the client gives up
        _post(server, timeout=3, schedule="paper")
    deadline = time.monotonic() + 30
    while httpx.get(f"{server}/api/health", timeout=10).json()["runs_admitted"]:
        assert time.monotonic() < deadline, "the abandoned run kept the device"
        time.sleep(0.2)
    assert _post(server).status_code == 200


def test_no_file_on_the_server_is_reachable_by_a_client_path(server):
    for target in ("/etc/passwd", str(EXAMPLES / "face.png"), str(Path(__file__).resolve())):
        for route in (f"/gradio_api/file={target}", f"/file={target}", f"/api/file={target}"):
            response = httpx.get(f"{server}{route}", timeout=10)
            assert response.status_code >= 400, route
            assert b"root:" not in response.content


def _gradio_call(url: str, data: list) -> str:
    """Call the page's own event API (as the browser does) and return its event stream."""
    event = httpx.post(f"{url}/gradio_api/call/inpaint", json={"data": data}, timeout=30).json()["event_id"]
    return httpx.get(f"{url}/gradio_api/call/inpaint/{event}", timeout=60).text


def test_the_page_api_refuses_server_paths_named_by_a_client(server):
    def file(path):
        return {"path": str(path), "meta": {"_type": "gradio.FileData"}}

    settings = ["default", "repaint", "custom", 4, 1, 1, 0, 1, "auto"]   # ..., seed, samples, fit
    named = {"background": file(EXAMPLES / "face.png"), "layers": [], "composite": None}
    stream = _gradio_call(server, [named, file(EXAMPLES / "face_mask.png"), False, *settings])
    assert "event: error" in stream and "not uploaded by a user" in stream
    assert "inpainted_s0.png" not in stream
    assert alive(server)


# ---------------------------------------------------------------------------------------------------------------
# limits: size, queue, load
# ---------------------------------------------------------------------------------------------------------------

def test_uploads_over_the_byte_or_pixel_limit_get_413(tight_server):
    big = _png(np.zeros((101, 100, 3), np.uint8))  # 10,100 pixels > 100x100
    response = _post(tight_server, image=big, mask=_png(np.zeros((101, 100), np.uint8)))
    assert response.status_code == 413 and "10,100 pixels" in response.json()["error"]
    noise = _png(np.random.default_rng(0).integers(0, 256, (100, 100, 3), dtype=np.uint8))  # ~30 kB
    response = _post(tight_server, image=noise + bytes(20_000))
    assert response.status_code == 413 and "MB" in response.json()["error"]
    huge = bytes(3 * 40_000 + 2**20)
    response = httpx.post(f"{tight_server}/api/inpaint", content=huge, timeout=10,
                          headers={"content-type": "application/octet-stream"})
    assert response.status_code == 413
    assert alive(tight_server)


def test_a_chunked_body_is_refused_once_it_passes_the_limit_not_after(tight_server):
    """No Content-Length: the body is counted as it streams; the 413 comes while the client is still sending."""
    host, port = tight_server.removeprefix("http://").split(":")
    head = (f"POST /api/inpaint HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n"
            "Content-Type: multipart/form-data; boundary=xx\r\n\r\n").encode()
    part = b'--xx\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
    chunk = bytes(64 * 1024)
    sent, answer = 0, b""
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(head + b"%x\r\n%s\r\n" % (len(part), part))
        while sent < 40 * 2**20 and not answer:
            try:
                conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:
                break
            sent += len(chunk)
            if select.select([conn], [], [], 0)[0]:
                answer = conn.recv(65536)
        while b"}" not in answer:     # the rest of the JSON answer
            try:
                more = conn.recv(65536)
            except OSError:
                break
            if not more:
                break
            answer += more
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"over the server's limit" in answer
    assert sent < 40 * 2**20         # refused while sending (the limit is 1.1 MB; socket buffers hold a few MB)
    assert alive(tight_server)


def test_a_run_over_the_cost_limit_is_refused_before_it_starts(tight_server):
    response = _post(tight_server, steps=250)
    error = response.json()["error"]
    assert response.status_code == 400, error
    assert re.fullmatch(r"this run needs 250 network calls, over the server's limit of 100: about [\d.]+ s, peak "
                        r"about .* per call at batch 1\); choose a shorter schedule or fewer samples", error), error


def test_twenty_concurrent_requests_all_finish_or_get_busy_and_the_server_lives(tight_server):
    """Load test: 20 requests at once to a server that runs one and queues none."""
    barrier = threading.Barrier(20)

    def one(seed):
        barrier.wait(timeout=30)
        return _post(tight_server, seed=seed, steps=10, timeout=120)

    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(one, range(20)))
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 503}, [r.text for r in responses if r.status_code not in (200, 503)]
    assert 1 <= codes.count(200) < 20
    for r in responses:
        if r.status_code == 503:
            assert "busy" in r.json()["error"] and r.headers["retry-after"]
        else:
            assert _array(r.content).shape == (64, 64, 3)
    assert alive(tight_server)
    assert _post(tight_server).status_code == 200  # and it is free again


# ---------------------------------------------------------------------------------------------------------------
# the pieces
# ---------------------------------------------------------------------------------------------------------------

def test_run_gate_admits_one_run_plus_the_queue_and_refuses_the_rest():
    gate, started, release = RunGate(max_queue=1), threading.Event(), threading.Event()

    def hold():
        with gate.slot():
            started.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    started.wait(10)
    waiter = threading.Thread(target=lambda: gate.slot().__enter__())  # waits its turn (queue of one)
    waiter.start()
    while gate.admitted < 2:
        pass
    with pytest.raises(Busy, match="busy"):
        with gate.slot():
            pass
    release.set()
    holder.join(10)
    waiter.join(10)
    assert not waiter.is_alive()


def test_decoding_uploads():
    limits = Limits(max_upload_bytes=10_000, max_pixels=64 * 64)
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)
    image = decode_image(_png(rgba), limits)
    assert image.shape == (4, 4, 3) and tuple(image[0, 0]) == (10, 20, 30) and tuple(image[1, 1]) == (255,) * 3
    mask = np.zeros((4, 4), np.uint8)
    mask[:2] = 255
    assert decode_mask(_png(mask), limits)[:2].all() and not decode_mask(_png(mask), limits)[2:].any()
    assert not decode_mask(_png(mask), limits, invert=True)[:2].any()
    with pytest.raises(TooLarge, match="pixels"):
        decode_image(_png(np.zeros((65, 64, 3), np.uint8)), limits)
    with pytest.raises(TooLarge, match="MB"):
        decode_image(bytes(10_001), limits)
    with pytest.raises(UploadError, match="not an image"):
        decode_image(b"GIF89a-nonsense", limits)
    layer = np.zeros((4, 4, 4), np.uint8)  # a painted layer: black strokes on transparency, which means keep
    layer[3] = (0, 0, 0, 255)
    assert decode_mask(_png(layer), limits)[:3].all() and not decode_mask(_png(layer), limits)[3].any()


def test_a_custom_schedule_costs_what_the_page_says_before_the_run(tmp_path):
    runner = Runner(ModelMenu({"default": "default"}), Limits())
    photo, keep = _array(FACE), _array(FACE_MASK)[..., 0] >= 128
    for steps, jump_length, jump_n_sample in ((6, 2, 2), (8, 3, 1)):
        opts = RunOptions("default", "recommended", "custom", steps, jump_length, jump_n_sample)
        said = runner.cost(opts)
        out = runner.run(photo, keep, opts)
        assert f": {out.calls:,} network calls per window" in said, (said, out.calls)
        assert f"steps={steps} jump_length={jump_length} jump_n_sample={jump_n_sample}" in said


def test_editor_layers_become_the_hole_at_the_photo_size():
    photo = np.zeros((40, 60, 4), np.uint8)
    layer = np.zeros((20, 30, 4), np.uint8)  # a canvas at half the size
    layer[5:10, 10:20, 3] = 255
    image, painted = editor_arrays({"background": photo, "layers": [layer], "composite": None})
    assert image.shape == (40, 60, 3) and painted.shape == (40, 60)
    assert painted[10:20, 20:40].all() and painted.sum() == 10 * 20
    with pytest.raises(ValueError, match="open a photo"):
        editor_arrays({"background": None, "layers": [], "composite": None})


def test_an_uploaded_mask_adds_its_black_to_the_painted_hole(tmp_path):
    from repaint.web.app import _Page

    page = _Page(Runner(ModelMenu({"default": "default"}), Limits()), tmp_path)
    photo, layer = np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8, 4), np.uint8)
    layer[0, 0, 3] = 255                              # painted: pixel (0, 0)
    mask = np.full((8, 8), 255, np.uint8)
    mask[7, 7] = 0                                    # uploaded: black (fill) at (7, 7)
    (tmp_path / "mask.png").write_bytes(_png(mask))
    editor = {"background": photo, "layers": [layer], "composite": None}
    _, keep = page.keep_mask(editor, str(tmp_path / "mask.png"), invert=False)
    assert not keep[0, 0] and not keep[7, 7] and keep.sum() == 62
    _, keep = page.keep_mask(editor, str(tmp_path / "mask.png"), invert=True)   # white = hole: all but (7, 7)
    assert keep.sum() == 1 and keep[7, 7]
    (tmp_path / "small.png").write_bytes(_png(mask[:4]))
    with pytest.raises(ValueError, match="same size"):
        page.keep_mask(editor, str(tmp_path / "small.png"), invert=False)


def test_a_person_s_mistakes_on_the_page_are_said_there_and_not_logged(server, capfd):
    face = {"path": str(EXAMPLES / "face.png"), "meta": {"_type": "gradio.FileData"}}
    uploaded = {**face, "path": httpx.post(f"{server}/gradio_api/upload", timeout=30,
                                           files={"files": ("face.png", FACE, "image/png")}).json()[0]}
    settings = ["default", "repaint", "custom", 4, 1, 1, 0, 1, "auto"]   # ..., seed, samples, fit
    for editor, words in ((None, "open a photo first"),
                          ({"background": uploaded, "layers": [], "composite": None}, "nothing to fill")):
        stream = _gradio_call(server, [editor, None, False, *settings])
        assert "event: error" in stream and words in stream, stream[-300:]
    log = capfd.readouterr()
    assert "Traceback" not in log.err + log.out


def test_brush_names_plan_and_preview_follow_the_photo():
    from repaint.api import Window
    from repaint.web.app import brush_radius
    from repaint.web.runner import photo_stem, preview

    assert brush_radius(64, 64) == 2 and brush_radius(451, 300) == 8 and brush_radius(2000, 1500) == 38
    assert photo_stem("holiday photo (2).JPG") == "holiday_photo_2" and photo_stem("../../x.png") == "x"
    assert photo_stem(None) == "photo" and photo_stem("....png", "image") == "image"
    runner = Runner(ModelMenu({"default": "default"}), Limits(max_calls=300))
    keep = np.ones((100, 150), bool)
    keep[40:60, 60:100] = False       # fits a 64x64 tile at scale 1 (a crop window with its margin would not)
    said = runner.describe_plan(keep, RunOptions())
    assert "1 tile(s) of 64x64 over the hole" in said and "230 network calls for 1 sample(s)" in said
    spot = np.ones((100, 150), bool)
    spot[45:55, 70:80] = False
    assert "1 window(s) of 64x64 around the hole, at full resolution" in runner.describe_plan(spot, RunOptions())
    assert "the whole 150x100 photo scaled to 64x64" in runner.describe_plan(keep, RunOptions(fit="resize"))
    with pytest.raises(ValueError, match="unknown fit"):
        runner.check(np.zeros((100, 150, 3), np.uint8), keep, RunOptions(fit="shrink"))
    assert runner.note((100, 150), RunOptions()).startswith("note: the bundled model was trained on 64x64 faces")
    assert runner.note((64, 64), RunOptions()) is None     # a 64x64 face is what it knows
    assert "Estimate: about " in said and "per call at batch 1)" in said
    assert "Over this server's limit" in runner.describe_plan(keep, RunOptions(schedule="paper"))
    photo = np.zeros((100, 150, 3), np.uint8)
    import torch

    frame = preview(photo, keep, Window(18, 48, 64, 64), torch.ones(3, 64, 64))  # x0 = white
    assert frame.shape == (64, 64, 3)                                  # the window, at the photo's resolution
    inside = keep[18:82, 48:112]
    assert (frame[~inside] == 255).all() and (frame[inside] == 0).all()   # the estimate shows in the hole only
    edge = preview(photo, keep, Window(-10, 100, 64, 64), torch.ones(3, 64, 64))  # past the photo: clipped
    assert edge.shape == (54, 50, 3)
    big = preview(np.zeros((1500, 2000, 3), np.uint8), np.zeros((1500, 2000), bool), Window(0, 0, 1500, 2000),
                  torch.ones(3, 64, 64))
    assert big.shape == (768, 1024, 3) and (big == 255).all()


def test_the_plan_shows_the_estimate_and_a_refusal_says_it():
    from repaint.cost import clear_timings

    runner = Runner(ModelMenu({"default": "default"}), Limits(max_calls=300))
    photo = np.asarray(Image.open(io.BytesIO(FACE)).convert("RGB"))
    keep = np.asarray(Image.open(io.BytesIO(FACE_MASK)).convert("L")) >= 128
    clear_timings()
    with runner.gate.slot():     # a run holds the device: no timing beside it
        assert "Estimate: once the run in progress ends" in runner.describe_plan(keep, RunOptions(n_samples=2))
    said = runner.describe_plan(keep, RunOptions(n_samples=2))
    guess = re.search(r"Estimate: (about [\d.]+ m?s, peak about [\d.]+ [MG]B of RAM \(timed on this machine: "
                      r"[\d.]+ m?s per call at batch 2\))$", said)
    assert guess, said
    with runner.gate.slot():     # measured before: shown while a run holds the device
        assert guess[1] in runner.describe_plan(keep, RunOptions(n_samples=2))
    with pytest.raises(ValueError) as refused:
        runner.run(photo, keep, RunOptions(schedule="paper"))
    message = str(refused.value)
    assert "\n" not in message and "over the server's limit of 300" in message
    assert re.search(r"2,410 network calls, over the server's limit of 300: about [\d.]+ (s|min), peak about .* "
                     r"per call at batch 1\); choose", message), message
    fill = runner.describe_plan(keep, RunOptions(sampler="telea"))
    assert "classical fill of the whole 64x64 photo" in fill and "Estimate: no network calls" in fill


def test_the_model_menu_takes_names_never_paths(tmp_path):
    a, b = tmp_path / "x" / "mine.safetensors", tmp_path / "y" / "mine.safetensors"
    for f in (a, b):
        f.parent.mkdir()
        f.write_bytes(b"")
    menu = discover_models([a, b])
    assert list(menu)[0] == "default" and menu["mine"] == str(a.resolve()) and menu["y/mine"] == str(b.resolve())
    with pytest.raises(CheckpointError, match="does not exist"):
        discover_models([tmp_path / "absent.pt"])
    with pytest.raises(ValueError, match="unknown model"):
        ModelMenu(menu).get(str(a))


# ---------------------------------------------------------------------------------------------------------------
# repaint serve
# ---------------------------------------------------------------------------------------------------------------

def test_serve_help_shows_safe_defaults():
    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0
    assert "127.0.0.1" in result.output and "--share" in result.output and "--max-queue" in result.output


def test_serve_refuses_a_missing_model_file_in_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["serve", "--model", str(tmp_path / "none.pt")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"repaint: error: model file {tmp_path / 'none.pt'} does not exist"]


def test_serve_refuses_a_port_in_use_in_one_line():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli, ["serve", "--port", str(port)])
    assert result.exit_code == 2
    assert result.output.startswith(f"repaint: error: cannot listen on 127.0.0.1:{port}")
    assert len(result.output.strip().splitlines()) == 1


def test_ctrl_c_stops_the_server_cleanly_while_runs_are_in_progress(tmp_path):
    """SIGINT with an API run and a page run in progress: the API client gets 503, the process exits at once with
    status 0, and its log holds no traceback (no CancelledError, no 500)."""
    import os
    import signal
    import subprocess
    import sys

    from web_server import free_port

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "repaint", "serve", "--port", str(port), "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if alive(url):
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None, "the server did not start"
                time.sleep(0.3)
        with ThreadPoolExecutor(2) as pool:
            api = pool.submit(_post, url, timeout=60, schedule="paper")
            face = {"path": str(EXAMPLES / "face.png"), "meta": {"_type": "gradio.FileData"}}
            page = pool.submit(lambda: httpx.post(f"{url}/gradio_api/upload", timeout=30,
                                                  files={"files": ("face.png", FACE, "image/png")}).json())
            uploaded = {**face, "path": page.result()[0]}
            layer = np.zeros((64, 64, 4), np.uint8)
            layer[20:30, 20:40] = 255
            up_layer = httpx.post(f"{url}/gradio_api/upload", timeout=30,
                                  files={"files": ("l.png", _png(layer), "image/png")}).json()[0]
            editor = {"background": uploaded, "layers": [{**face, "path": up_layer}], "composite": None}
            stream = pool.submit(_gradio_call, url, [editor, None, False, "default", "recommended", "paper", 4, 1, 1,
                                                     0, 1, "auto"])
            deadline = time.monotonic() + 60
            while httpx.get(f"{url}/api/health", timeout=10).json()["runs_admitted"] < 2:
                assert time.monotonic() < deadline and not stream.done(), "the two runs did not start"
                time.sleep(0.2)
            proc.send_signal(signal.SIGINT)
            answer = api.result(timeout=30)
            assert answer.status_code == 503 and "shutting down" in answer.json()["error"]
            stream.result(timeout=30)
        log, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, log
    assert "Traceback" not in log and "CancelledError" not in log and "500" not in log, log
