"""The Gradio page: open a photo, paint the hole (or upload a mask), see the plan, watch the fill, compare, go on.

The page only turns what the person gave into arrays (:func:`editor_arrays`), asks the :class:`Runner` for the plan
and the run, and presents what comes back: a before/after slider per sample, the samples, downloads named after the
photo and the seed (and a ZIP), and a live preview of the x0 estimate at the photo's size while the run goes. A Stop
button, enabled only while a run goes, sets the session's cancel flag; the library's progress callback raises
:class:`repaint.api.Cancelled` at the next network call.
"""

# No `from __future__ import annotations` here: Gradio reads the handlers' annotations (gr.Request, gr.Progress,
# gr.SelectData) at run time.

import hashlib
import logging
import queue
import shutil
import tempfile
import threading
import time
import uuid
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from ..api import Cancelled, sample_filename
from ..samplers import describe
from .limits import Busy, check_pixels, decode_image, decode_mask
from .runner import FIT_CHOICES, SAMPLER_CHOICES, SCHEDULE_CHOICES, RunOptions, Runner, photo_stem

__all__ = ["build_app", "editor_arrays", "brush_radius"]

log = logging.getLogger("repaint.web")

BRUSH_COLOUR = "#ff00ff"  # painted strokes mark the hole; any colour works, magenta stands out on photos
BRUSH_SHARE = 40          # the default brush radius is the photo's shorter side over this (a 64-px face: 2 px)
KEEP_OUTPUTS_S = 3600     # result files older than this are deleted when a new run starts
# small photos (the 64-px face) are shown filling their box, with visible pixels, not as a thumbnail in a corner
CSS = """
#preview img, #mask-preview img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }
"""


def brush_radius(width: int, height: int) -> int:
    """The default brush radius for a photo, in its own pixels: a stroke covers a small share of any photo."""
    return max(2, round(min(width, height) / BRUSH_SHARE))


def _alpha(layer: np.ndarray) -> np.ndarray:
    layer = np.asarray(layer)
    if layer.ndim == 3 and layer.shape[2] == 4:
        return layer[..., 3] > 0
    return (layer.max(axis=-1) if layer.ndim == 3 else layer) > 0


def editor_arrays(editor: dict | None) -> tuple[np.ndarray, np.ndarray]:
    """The ImageEditor's value -> (photo uint8 [H, W, 3], painted bool [H, W]); painted pixels are the hole.

    Layers of another size than the photo (a resized canvas) are scaled to it with nearest-neighbour sampling.
    """
    if not editor or editor.get("background") is None:
        raise ValueError("open a photo first")
    background = np.asarray(editor["background"])
    if background.ndim == 2:
        background = np.stack([background] * 3, axis=-1)
    photo = np.ascontiguousarray(background[..., :3], dtype=np.uint8)
    h, w = photo.shape[:2]
    painted = np.zeros((h, w), dtype=bool)
    for layer in editor.get("layers") or []:
        alpha = _alpha(layer)
        if alpha.shape != (h, w):
            alpha = np.asarray(Image.fromarray(alpha).resize((w, h), Image.NEAREST))
        painted |= alpha
    return photo, painted


def _named(stem: str, photo: np.ndarray) -> dict:
    """The page's memory of which photo has which name (the editor forgets file names)."""
    return {"stem": stem, "digest": hashlib.blake2b(np.ascontiguousarray(photo[..., :3]).tobytes()).hexdigest()}


def _stem_of(named: dict | None, photo: np.ndarray) -> str:
    """The name of the photo being edited: the opened file's, if the editor still holds that photo."""
    if named and _named("", photo)["digest"] == named.get("digest"):
        return named["stem"]
    return "photo"


def _time_left(first: tuple[float, int], calls: int, total: int | None) -> str:
    """", about 1 min 20 s left" from the rate since the first report (empty until there is a rate)."""
    seconds, done = time.monotonic() - first[0], calls - first[1]
    if not total or done < 1 or seconds < 1:
        return ""
    left = round((total - calls) * seconds / done)
    return f", about {left // 60} min {left % 60} s left" if left >= 60 else f", about {left} s left"


def _int(value) -> int | None:
    return None if value is None or value == "" else int(value)


def _options(model, sampler, schedule, steps, jump_length, jump_n_sample, seed=0, n_samples=1,
             fit="auto") -> RunOptions:
    return RunOptions(model, sampler, schedule, _int(steps), _int(jump_length), _int(jump_n_sample),
                      int(seed or 0), int(n_samples or 1), fit=fit or "auto")


def _brush(radius: int | None = None):
    import gradio as gr

    size = "auto" if radius is None else radius
    return (gr.Brush(colors=[BRUSH_COLOUR], default_color=BRUSH_COLOUR, color_mode="fixed", default_size=size),
            gr.Eraser(default_size=size))


class _Page:
    """The page's handlers; one cancel flag per browser session."""

    def __init__(self, runner: Runner, out_dir: Path) -> None:
        self.runner, self.out_dir = runner, out_dir
        self.cancel: dict[str, threading.Event] = {}

    # -- the photo and the mask ----------------------------------------------------------------------------------

    def open_photo(self, path: str):
        """An uploaded file -> the editor's value (the photo, nothing painted), the brush for its size, its stem."""
        import gradio as gr

        try:
            photo = decode_image(Path(path).read_bytes(), self.runner.limits, "the photo")
        except ValueError as err:
            raise gr.Error(str(err), print_exception=False) from None
        brush, eraser = _brush(brush_radius(photo.shape[1], photo.shape[0]))
        value = {"background": photo, "layers": [], "composite": photo}
        return gr.update(value=value, brush=brush, eraser=eraser), _named(photo_stem(Path(path).name), photo)

    def sized_brush(self, editor):
        """After a photo was dropped on the editor itself: a brush for its size."""
        import gradio as gr

        if not editor or editor.get("background") is None:
            return gr.skip()
        h, w = np.asarray(editor["background"]).shape[:2]
        brush, eraser = _brush(brush_radius(w, h))
        return gr.update(brush=brush, eraser=eraser)

    def keep_mask(self, editor, mask_file, invert: bool) -> tuple[np.ndarray, np.ndarray]:
        photo, painted = editor_arrays(editor)
        check_pixels(photo.shape[1], photo.shape[0], self.runner.limits, "the photo")
        hole = painted
        if mask_file:
            uploaded = decode_mask(Path(mask_file).read_bytes(), self.runner.limits, invert, "the mask")
            if uploaded.shape != hole.shape:
                raise ValueError(f"the mask is {uploaded.shape[1]}x{uploaded.shape[0]} but the photo is "
                                 f"{photo.shape[1]}x{photo.shape[0]}; they must be the same size")
            hole = hole | ~uploaded
        return photo, ~hole

    # -- before Inpaint: the mask preview, the model's notes and the plan ------------------------------------------

    def refresh(self, editor, mask_file, invert, model, sampler, schedule, steps, jump_length, jump_n_sample,
                n_samples, fit="auto"):
        """The mask as it will be used (white = keep, black = fill), the model's notes, and the plan in words."""
        notes = [f"**{model}**: {self.runner.menu.description(model)}"] if model in self.runner.menu.entries else []
        try:
            opts = _options(model, sampler, schedule, steps, jump_length, jump_n_sample, 0, n_samples, fit)
            if not editor or editor.get("background") is None:
                return None, "\n\n".join(notes), f"{self.runner.cost(opts)}. Open a photo to see the whole plan."
            photo, keep = self.keep_mask(editor, mask_file, bool(invert))
            if (note := self.runner.note(photo.shape, opts)) is not None:   # the library's words, as the CLI's
                words = note.removeprefix("note: ")
                notes.append(f"{words[:1].upper()}{words[1:]}.")
            mask = (keep * 255).astype(np.uint8)
            if keep.all():
                return mask, "\n\n".join(notes), "Paint over the region to fill (or upload a mask) to see the plan."
            return mask, "\n\n".join(notes), self.runner.describe_plan(keep, opts)
        except (TypeError, ValueError) as err:
            return None, "\n\n".join(notes), f"Cannot run: {' '.join(str(err).split())}"

    # -- the run ---------------------------------------------------------------------------------------------------

    def run(self, editor, mask_file, invert, model, sampler, schedule, steps, jump_length, jump_n_sample, seed,
            n_samples, fit="auto", named=None, request=None, progress=None):
        """A generator: live previews of the x0 estimate while the run goes, then the results."""
        import gradio as gr

        session = getattr(request, "session_hash", None) or "anonymous"
        flag = self.cancel.setdefault(session, threading.Event())
        flag.clear()
        try:
            photo, keep = self.keep_mask(editor, mask_file, bool(invert))
            opts = _options(model, sampler, schedule, steps, jump_length, jump_n_sample, seed, n_samples, fit)
            self.runner.check(photo, keep, opts)
        except (ValueError, TypeError) as err:
            raise gr.Error(" ".join(str(err).split()), print_exception=False) from None
        events: queue.Queue = queue.Queue()
        done: dict = {}

        def work() -> None:
            try:
                done["out"] = self.runner.run(photo, keep, opts, cancel=flag,
                                              on_progress=lambda c, t: events.put(("progress", (c, t))),
                                              on_preview=lambda frame: events.put(("preview", frame)))
            except BaseException as err:  # noqa: BLE001  (handed to the page below)
                done["error"] = err
            finally:
                events.put(("end", None))

        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        skip = [gr.skip()] * 6
        first = None   # (time, calls) of the first progress report: the rate that gives the time left
        try:
            while True:
                kind, item = events.get()
                if kind == "end":
                    break
                if kind == "progress" and progress is not None:
                    first = first or (time.monotonic(), item[0])
                    progress(item, desc=f"network calls{_time_left(first, *item)}", unit="calls")
                elif kind == "preview":
                    yield (*skip, item)
        finally:
            flag.set()  # the page went away or Stop was pressed: the run stops at its next network call
        if "error" in done:
            self._raise(done["error"])
        yield (*self._present(done["out"], photo, _stem_of(named, photo)), gr.skip())

    @staticmethod
    def _raise(err: BaseException):
        import gradio as gr

        if isinstance(err, Cancelled):
            raise gr.Error(str(err), duration=5, print_exception=False) from None
        if isinstance(err, (Busy, ValueError, TypeError)):   # the person's to fix: said on the page, not logged
            raise gr.Error(" ".join(str(err).split()), print_exception=False) from None
        if isinstance(err, (RuntimeError, MemoryError)):     # the server's fault: logged once, with its traceback
            log.error("the run failed", exc_info=err)
            raise gr.Error(f"the run failed on the server: {' '.join(str(err).split()) or type(err).__name__}",
                           print_exception=False) from None
        raise err

    def _prune(self) -> None:
        now = time.time()
        for folder in self.out_dir.iterdir():
            if now - folder.stat().st_mtime > KEEP_OUTPUTS_S:
                shutil.rmtree(folder, ignore_errors=True)

    def _present(self, out, photo, stem: str):
        import gradio as gr

        self._prune()
        folder = self.out_dir / uuid.uuid4().hex
        folder.mkdir()
        before = folder / f"{stem}.png"
        Image.fromarray(photo).save(before)
        files = []
        for seed, sample in out.result.samples.items():
            path = folder / sample_filename(stem, seed)
            Image.fromarray(sample).save(path)
            files.append((str(path), seed))
        archive = None
        if len(files) > 1:
            archive = folder / f"{stem}_samples.zip"
            with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
                for path, _ in files:
                    zf.write(path, Path(path).name)
        h, w = photo.shape[:2]
        status = (f"{len(files)} sample(s) of {w}x{h} in {out.seconds:.1f} s: {out.calls:,} network calls "
                  f"({describe(out.settings)}), {len(out.result.windows)} window(s)")
        if out.note:
            status += f". {out.note}"
        state = {"before": str(before), "samples": [p for p, _ in files], "seeds": [s for _, s in files],
                 "selected": 0, "stem": stem}
        downloads = [p for p, _ in files] + ([str(archive)] if archive else [])
        return ((str(before), files[0][0]), gr.Gallery(value=[(p, f"seed {s}") for p, s in files], selected_index=0),
                downloads, gr.DownloadButton(value=str(archive) if archive else None, visible=archive is not None),
                status, state)

    def stop(self, request=None) -> str:
        session = getattr(request, "session_hash", None) or "anonymous"
        if session in self.cancel:
            self.cancel[session].set()
        return "Stopped: the run was cancelled at its next network call."

    # -- after the run ---------------------------------------------------------------------------------------------

    @staticmethod
    def select(state: dict, index: int):
        """A sample picked in the gallery: compare it, and make it the one "use as input" takes."""
        import gradio as gr

        if not state or not 0 <= index < len(state["samples"]):
            return gr.skip(), state
        return (state["before"], state["samples"][index]), {**state, "selected": index}

    @staticmethod
    def use_as_input(state: dict):
        """The selected sample becomes the photo to edit, with nothing painted; its files are named after it."""
        import gradio as gr

        if not state:
            raise gr.Error("run first: there is no result to use yet", print_exception=False)
        k = state["selected"]
        sample = np.asarray(Image.open(state["samples"][k]).convert("RGB"))
        brush, eraser = _brush(brush_radius(sample.shape[1], sample.shape[0]))
        value = {"background": sample, "layers": [], "composite": sample}
        return gr.update(value=value, brush=brush, eraser=eraser), _named(f"{state['stem']}_s{state['seeds'][k]}",
                                                                          sample)


def build_app(runner: Runner, out_dir: Path | None = None):
    """The Gradio Blocks of the page (queue set up by :func:`repaint.web.server.build_server`)."""
    import gradio as gr

    out_dir = Path(out_dir or tempfile.mkdtemp(prefix="repaint-web-"))
    page = _Page(runner, out_dir)
    limits = runner.limits
    brush, eraser = _brush()

    def run(editor, mask_file, invert, model, sampler, schedule, steps, jump_length, jump_n_sample, seed,
            n_samples, fit, stem, request: gr.Request, progress=gr.Progress()):
        yield from page.run(editor, mask_file, invert, model, sampler, schedule, steps, jump_length, jump_n_sample,
                            seed, n_samples, fit, stem, request, progress)

    def stop(request: gr.Request):
        return page.stop(request), gr.update(interactive=True), gr.update(interactive=False)

    def select(state, evt: gr.SelectData):
        return page.select(state, evt.index)

    def running():
        return gr.update(interactive=False), gr.update(interactive=True)

    def idle():
        return gr.update(interactive=True), gr.update(interactive=False)

    with gr.Blocks(title="repaint", delete_cache=(KEEP_OUTPUTS_S, KEEP_OUTPUTS_S)) as demo:
        gr.Markdown("## repaint: paint the hole, watch it fill\nOpen a photo of any size and paint over what "
                    "should be replaced (or upload a mask: white = keep, black = fill). The fill is sampled with "
                    "RePaint (Lugmayr et al., CVPR 2022).")
        stem = gr.State({})
        result = gr.State({})
        with gr.Row():
            with gr.Column(scale=3):
                opener = gr.UploadButton("Open a photo", file_types=["image"], type="filepath", elem_id="open",
                                         size="sm")
                editor = gr.ImageEditor(
                    label="Photo: paint the hole (brush, eraser and undo in the toolbar)", type="numpy",
                    format="png", image_mode="RGBA", sources=("upload", "clipboard"), transforms=(), layers=False,
                    elem_id="editor", brush=brush, eraser=eraser, height=520,
                )
                with gr.Accordion("Or upload a mask", open=False):
                    mask_file = gr.File(label="Mask (white = keep, black = fill)", file_types=["image"],
                                        type="filepath", elem_id="mask-file")
                    invert = gr.Checkbox(label="Invert (the mask uses white for the hole)", value=False)
            with gr.Column(scale=2):
                model = gr.Dropdown(runner.menu.names, value=runner.menu.names[0], label="Model", elem_id="model")
                model_note = gr.Markdown(elem_id="model-note")
                sampler = gr.Dropdown(list(SAMPLER_CHOICES), value="recommended", label="Sampler", elem_id="sampler",
                                      info="recommended = the model's own (lanpaint for the bundled face model)")
                schedule = gr.Radio(list(SCHEDULE_CHOICES), value="recommended", label="Schedule", elem_id="schedule",
                                    info="recommended = the model's own; custom = RePaint with the T, j, r below, "
                                         "resampling at every step as the paper does")
                with gr.Row(visible=False) as custom_row:
                    steps = gr.Number(label="T (steps)", value=100, precision=0, minimum=2, elem_id="steps")
                    jump_length = gr.Number(label="j (jump length)", value=10, precision=0, minimum=1,
                                            elem_id="jump-length")
                    jump_n_sample = gr.Number(label="r (resamplings)", value=3, precision=0, minimum=1,
                                              elem_id="jump-n-sample")
                with gr.Row():
                    seed = gr.Number(label="Seed", value=0, precision=0, elem_id="seed")
                    n_samples = gr.Slider(1, limits.max_samples, value=1, step=1, label="Samples",
                                          elem_id="n-samples")
                fit = gr.Dropdown(list(FIT_CHOICES), value="auto", label="Fit", elem_id="fit",
                                  info="auto = windows at the photo's resolution, tiles where a hole is larger than "
                                       "one window; resize = the whole photo scaled to the model (fast, blurred)")
                plan_line = gr.Markdown(elem_id="plan")
                mask_preview = gr.Image(label="Mask as it will be used (black = fill)", elem_id="mask-preview",
                                        interactive=False, height=160, format="png", type="numpy")
                with gr.Row():
                    go = gr.Button("Inpaint", variant="primary", elem_id="run")
                    halt = gr.Button("Stop", variant="secondary", elem_id="stop", interactive=False)
                status = gr.Markdown(elem_id="status")
        with gr.Row():
            compare = gr.ImageSlider(label="Before / after", type="filepath", elem_id="compare", interactive=False,
                                     height=420)
            live = gr.Image(label="x0 estimate during the run", elem_id="preview", interactive=False, height=420,
                            format="jpeg", type="numpy")
        with gr.Row():
            with gr.Column(scale=3):
                gallery = gr.Gallery(label="Samples: pick one to compare it and to use it", format="png", columns=4,
                                     height=220, object_fit="contain", elem_id="gallery", interactive=False,
                                     allow_preview=False)
            with gr.Column(scale=2):
                reuse = gr.Button("Use as input (go on editing the picked sample)", elem_id="use")
                archive = gr.DownloadButton("Download all samples (ZIP)", elem_id="zip", visible=False)
                files = gr.File(label="Download", file_count="multiple", interactive=False, elem_id="downloads")

        inputs = [editor, mask_file, invert, model, sampler, schedule, steps, jump_length, jump_n_sample, seed,
                  n_samples, fit, stem]
        started = go.click(running, None, [go, halt], queue=False, api_name=False)
        job = started.then(run, inputs, [compare, gallery, files, archive, status, result, live],
                           api_name="inpaint", concurrency_limit=1, concurrency_id="device",
                           show_progress_on=[status])   # one progress display, the live preview stays visible
        job.then(idle, None, [go, halt], queue=False, api_name=False)
        halt.click(stop, None, [status, go, halt], cancels=[job], queue=False, api_name=False)
        watched = [editor, mask_file, invert, model, sampler, schedule, steps, jump_length, jump_n_sample, n_samples,
                   fit]
        refreshed = dict(fn=page.refresh, inputs=watched, outputs=[mask_preview, model_note, plan_line], queue=False,
                         api_name=False, show_progress="hidden", trigger_mode="always_last")
        # one listener for all the fields, so that the answers come in the order of the changes (the last one wins)
        gr.on([field.change for field in watched] + [demo.load], **refreshed)
        # a value set by a handler fires no change event: the plan is refreshed after each of these
        opener.upload(page.open_photo, opener, [editor, stem], queue=False, api_name=False).then(**refreshed)
        editor.upload(page.sized_brush, editor, editor, queue=False, api_name=False).then(**refreshed)
        reuse.click(page.use_as_input, result, [editor, stem], queue=False, api_name=False).then(**refreshed)
        gallery.select(select, result, [compare, result], queue=False, api_name=False)
        schedule.change(lambda choice: gr.update(visible=choice == "custom"), schedule, custom_row, queue=False,
                        api_name=False)
    return demo
