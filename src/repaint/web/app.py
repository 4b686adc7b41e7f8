"""The Gradio page: paint the hole on the photo (or upload a mask), choose model and schedule, watch it fill.

The page only turns what the person gave into arrays (:func:`editor_arrays`), calls :meth:`Runner.run` and shows the
full-size samples, their PNG files and an animation of the x0 estimate. A Stop button sets the session's cancel flag;
the library's progress callback raises :class:`repaint.api.Cancelled` at the next network call.
"""

# No `from __future__ import annotations` here: Gradio reads the handlers' annotations (gr.Request, gr.Progress)
# at run time.

import logging
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

from ..api import Cancelled
from .limits import Busy, check_pixels, decode_mask
from ..samplers import describe
from .runner import SAMPLER_CHOICES, SCHEDULE_CHOICES, RunOptions, Runner, write_animation

__all__ = ["build_app", "editor_arrays"]

log = logging.getLogger("repaint.web")

BRUSH_COLOUR = "#ff00ff"  # painted strokes mark the hole; any colour works, magenta stands out on photos
KEEP_OUTPUTS_S = 3600     # result files older than this are deleted when a new run starts


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
        raise ValueError("upload a photo first")
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


class _Page:
    """The page's handlers; one cancel flag per browser session."""

    def __init__(self, runner: Runner, out_dir: Path) -> None:
        self.runner, self.out_dir = runner, out_dir
        self.cancel: dict[str, threading.Event] = {}

    def _keep_mask(self, editor, mask_file, invert: bool) -> tuple[np.ndarray, np.ndarray]:
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

    def _prune(self) -> None:
        now = time.time()
        for folder in self.out_dir.iterdir():
            if now - folder.stat().st_mtime > KEEP_OUTPUTS_S:
                shutil.rmtree(folder, ignore_errors=True)

    def run(self, editor, mask_file, invert, model, sampler, schedule, steps, jump_length, jump_n_sample, seed,
            n_samples, request=None, progress=None):
        import gradio as gr

        session = getattr(request, "session_hash", None) or "anonymous"
        flag = self.cancel.setdefault(session, threading.Event())
        flag.clear()
        try:
            photo, keep = self._keep_mask(editor, mask_file, bool(invert))
            opts = RunOptions(model, sampler, schedule, _int(steps), _int(jump_length), _int(jump_n_sample),
                              int(seed or 0), int(n_samples or 1))
            report = (lambda calls, total: progress((calls, total), desc="network calls", unit="calls")) \
                if progress is not None else None
            out = self.runner.run(photo, keep, opts, on_progress=report, cancel=flag, animate=True)
        except Cancelled as err:
            raise gr.Error(str(err), duration=5, print_exception=False) from None
        except (Busy, ValueError, TypeError) as err:   # the person's to fix: said on the page, not logged
            raise gr.Error(" ".join(str(err).split()), print_exception=False) from None
        except (RuntimeError, MemoryError) as err:     # the server's fault: logged once, with its traceback
            log.error("the run failed", exc_info=True)
            raise gr.Error(f"the run failed on the server: {' '.join(str(err).split()) or type(err).__name__}",
                           print_exception=False) from None
        return self._present(out, photo)

    def _present(self, out, photo):
        self._prune()
        folder = self.out_dir / uuid.uuid4().hex
        folder.mkdir()
        files = []
        for seed, sample in out.result.samples.items():
            path = folder / f"inpainted_s{seed}.png"
            Image.fromarray(sample).save(path)
            files.append(str(path))
        gallery = [(f, f"seed {s}") for f, s in zip(files, out.result.samples)]
        animation = str(write_animation(out.frames, folder / "x0_estimate.gif")) if out.frames else None
        h, w = photo.shape[:2]
        status = (f"{len(files)} sample(s) of {w}x{h} in {out.seconds:.1f} s: {out.calls} network calls "
                  f"({describe(out.settings)}), {len(out.result.windows)} window(s)")
        return gallery, animation, files, status

    def stop(self, request=None) -> str:
        session = getattr(request, "session_hash", None) or "anonymous"
        if session in self.cancel:
            self.cancel[session].set()
        return "Stopped: the run was cancelled at its next network call."


def _int(value) -> int | None:
    return None if value is None or value == "" else int(value)


def build_app(runner: Runner, out_dir: Path | None = None):
    """The Gradio Blocks of the page (queue set up by :func:`repaint.web.server.build_server`)."""
    import gradio as gr

    out_dir = Path(out_dir or tempfile.mkdtemp(prefix="repaint-web-"))
    page = _Page(runner, out_dir)
    limits = runner.limits

    def run(editor, mask_file, invert, model, sampler, schedule, steps, jump_length, jump_n_sample, seed,
            n_samples, request: gr.Request, progress=gr.Progress()):
        gallery, animation, files, status = page.run(editor, mask_file, invert, model, sampler, schedule, steps,
                                                     jump_length, jump_n_sample, seed, n_samples, request, progress)
        return gr.Gallery(value=gallery, selected_index=0), animation, files, status  # opens the first sample

    def stop(request: gr.Request) -> str:
        return page.stop(request)

    def schedule_fields(choice: str):
        return gr.update(visible=choice == "custom")

    def cost(model, sampler, schedule, steps, jump_length, jump_n_sample) -> str:
        try:
            opts = RunOptions(model, sampler, schedule, _int(steps), _int(jump_length), _int(jump_n_sample))
            return runner.cost(opts)
        except (TypeError, ValueError) as err:
            return f"cannot run: {err}"

    with gr.Blocks(title="repaint", delete_cache=(KEEP_OUTPUTS_S, KEEP_OUTPUTS_S)) as demo:
        gr.Markdown("## repaint: paint the hole, watch it fill\nUpload a photo of any size and paint over what "
                    "should be replaced (or upload a mask: white = keep, black = fill). The fill is sampled with "
                    "RePaint (Lugmayr et al., CVPR 2022).")
        with gr.Row():
            with gr.Column(scale=3):
                editor = gr.ImageEditor(
                    label="Photo: paint the hole", type="numpy", format="png", image_mode="RGBA",
                    sources=("upload", "clipboard"), transforms=(), layers=False, elem_id="editor",
                    brush=gr.Brush(colors=[BRUSH_COLOUR], default_color=BRUSH_COLOUR, color_mode="fixed"),
                    eraser=gr.Eraser(), height=520,
                )
                with gr.Accordion("Or upload a mask", open=False):
                    mask_file = gr.File(label="Mask (white = keep, black = fill)", file_types=["image"],
                                        type="filepath", elem_id="mask-file")
                    invert = gr.Checkbox(label="Invert (the mask uses white for the hole)", value=False)
            with gr.Column(scale=2):
                model = gr.Dropdown(runner.menu.names, value=runner.menu.names[0], label="Model", elem_id="model")
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
                cost_line = gr.Markdown(elem_id="cost")
                with gr.Row():
                    seed = gr.Number(label="Seed", value=0, precision=0, elem_id="seed")
                    n_samples = gr.Slider(1, limits.max_samples, value=1, step=1, label="Samples",
                                          elem_id="n-samples")
                with gr.Row():
                    go = gr.Button("Inpaint", variant="primary", elem_id="run")
                    halt = gr.Button("Stop", variant="stop", elem_id="stop")
                status = gr.Markdown(elem_id="status")
        with gr.Row():
            gallery = gr.Gallery(label="Samples (full size)", format="png", columns=2, height=420,
                                 object_fit="contain", elem_id="gallery", interactive=False, preview=True)
            animation = gr.Image(label="x0 estimate during the run", type="filepath", format="gif",
                                 elem_id="animation", interactive=False, height=420)
        files = gr.File(label="Download", file_count="multiple", interactive=False, elem_id="downloads")

        event = go.click(
            run, [editor, mask_file, invert, model, sampler, schedule, steps, jump_length, jump_n_sample, seed,
                  n_samples], [gallery, animation, files, status], api_name="inpaint", concurrency_limit=1,
            concurrency_id="device",
        )
        halt.click(stop, None, status, cancels=[event], queue=False, api_name=False)
        schedule.change(schedule_fields, schedule, custom_row, queue=False, api_name=False)
        choices = [model, sampler, schedule, steps, jump_length, jump_n_sample]
        for field in choices:
            field.change(cost, choices, cost_line, queue=False, api_name=False)
        demo.load(cost, choices, cost_line, queue=False, api_name=False)
    return demo
