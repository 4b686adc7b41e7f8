"""What a sampling loop costs on top of its network calls (issue 26, item 4): our RePaint loop, the reference
implementation's and diffusers' RePaintPipeline, each against bare calls of its own network and of ours.

    python benchmarks/loop_overhead.py --reference /tmp/RePaint-ref            # face64, batch 1 and 4, 7 rounds
    python benchmarks/loop_overhead.py --reference /tmp/RePaint-ref --network adm256 --batch 1 --repeats 2

Arms, per network and batch size, all on the same weights and one torch thread:

* ``ours floor``: N bare calls of our ADM UNet on inputs of the loop's shape; ``ours loop``: the library's RePaint
  loop (:func:`repaint.samplers.repaint.repaint`, the paper's Algorithm 1, a short jump schedule of exactly N network
  calls, one seeded generator per image as the library runs it).
* ``reference floor`` / ``reference loop``: the same, with the reference's UNet (openai/guided-diffusion as forked
  by andreas128/RePaint) holding our state dict, and its ``p_sample_loop`` driven by a conf dict built here, as its
  ``test.py`` drives it from a YAML file. Its code is imported at run time from ``--reference PATH`` (a checkout of
  andreas128/RePaint); nothing of it is copied here. Without ``--reference`` these arms are reported as not run.
* ``diffusers floor`` / ``diffusers loop``: ``UNet2DModel`` with our weights (converted by the functions behind
  ``repaint export --format diffusers``) and the deprecated ``RePaintPipeline`` at the same T, jump length and
  resamplings (eta = 1, the DDPM case). RePaintPipeline cannot use a learned-range model, so the UNet2DModel here
  returns only the eps half of the output channels (one slice per call; its floor calls the same object).

Timing: one untimed warm-up of every arm, then ``--repeats`` rounds; each round runs every arm once, the order
rotated by one arm per round, and records ``os.getloadavg()``. Ratios are taken within a round (a loop over the floor
measured in the same round), then min/median/max over rounds. Forward hooks around every network call
(``photo.time_network_calls``) also give each loop's own time, outside its network calls, within the same run.

Agreement (``--reference`` given): our loop and the reference's on the same noise (the global generator seeded
alike; our sampler draws in the reference's order), without the final paste of the known pixels, which the
reference does not do: the largest absolute difference of the results.

Results: ``--out`` (default benchmarks/results/loop_overhead_cpu.json) and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from photo import time_network_calls  # noqa: E402

from repaint.checkpoints import load_denoiser  # noqa: E402
from repaint.diffusion import Diffusion, beta_schedule  # noqa: E402
from repaint.images import load_image  # noqa: E402
from repaint.inpainter import unet_model_fn  # noqa: E402
from repaint.masks import load_mask  # noqa: E402
from repaint.samplers.common import make_generators  # noqa: E402
from repaint.samplers.repaint import repaint  # noqa: E402
from repaint.schedule import JumpSchedule  # noqa: E402
from repaint.settings import SamplerSettings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCHEDULES = {"face64": (25, 5, 2), "adm256": (3, 1, 2)}  # (T, jump length, resamplings): 45 and 5 network calls
GET_REFERENCE = ("git clone https://github.com/andreas128/RePaint /tmp/RePaint-ref, then pass "
                 "--reference /tmp/RePaint-ref (its code is imported at run time, not copied)")


# ----------------------------------------------------------------------------------------------------------------
# The networks and the image


def load_network(name: str):
    """(our UNet, its UNetConfig, its DiffusionSettings): the bundled face model, or the 256² ADM, random weights."""
    if name == "adm256":
        from cpu_modes import random_adm256

        from repaint.models.config import DiffusionSettings

        net, config = random_adm256()
        return net, config, DiffusionSettings(steps=1000, noise_schedule="linear", learn_sigma=True)
    net, config, trained = load_denoiser("default")
    return net.eval().requires_grad_(False), config, trained


def our_diffusion(trained, steps: int) -> Diffusion:
    """The respaced diffusion a run of T = ``steps`` gets, as :class:`repaint.inpainter.Inpainter` builds it."""
    return Diffusion(SamplerSettings(steps=steps).diffusion_config(trained))


def face_and_mask(size: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """examples/face.png and its mask, resized to the network's size, repeated ``batch`` times; [-1, 1], 1 = keep."""
    image = load_image(ROOT / "examples/face.png")[None]
    keep = load_mask(ROOT / "examples/face_mask.png")[None, None].float()
    if image.shape[-1] != size:
        image = torch.nn.functional.interpolate(image, size=(size, size), mode="bilinear", antialias=True)
        keep = (torch.nn.functional.interpolate(keep, size=(size, size), mode="nearest") > 0.5).float()
    return image.expand(batch, -1, -1, -1).contiguous(), keep.expand(batch, -1, -1, -1).contiguous()


# ----------------------------------------------------------------------------------------------------------------
# The reference implementation, imported from a checkout


def import_reference(path: Path) -> dict:
    """The reference's modules, imported from the checkout at ``path``."""
    if not (path / "guided_diffusion" / "gaussian_diffusion.py").is_file():
        raise SystemExit(f"--reference {path}: no guided_diffusion/gaussian_diffusion.py there; {GET_REFERENCE}")
    sys.path.insert(0, str(path))
    names = ("guided_diffusion.gaussian_diffusion", "guided_diffusion.respace", "guided_diffusion.script_util",
             "conf_mgt.conf_base")
    return {name.rsplit(".", 1)[-1]: importlib.import_module(name) for name in names}


def reference_conf(ref: dict, schedule: tuple[int, int, int]):
    """The conf dict its sampler reads (the keys of its confs/*.yml that p_sample_loop and the UNet look at)."""
    steps, jump, resamplings = schedule
    conf = ref["conf_base"].Default_Conf()
    conf.update(diffusion_steps=1000, timestep_respacing=str(steps), clip_denoised=True, use_ddim=False,
                inpa_inj_sched_prev=True, inpa_inj_sched_prev_cumnoise=False, show_progress=False,
                schedule_jump_params=dict(t_T=steps, n_sample=1, jump_length=jump, jump_n_sample=resamplings))
    return conf


def reference_network(ref: dict, net: torch.nn.Module, config, conf) -> torch.nn.Module:
    """Its UNet, built by its ``create_model`` from our config, holding our state dict (key names must match)."""
    model = ref["script_util"].create_model(
        config.image_size, config.model_channels, config.num_res_blocks, channel_mult=tuple(config.channel_mult),
        learn_sigma=config.learn_sigma, class_cond=config.class_cond,
        attention_resolutions=",".join(str(r) for r in config.attention_resolutions), num_heads=config.num_heads,
        num_head_channels=config.num_head_channels, num_heads_upsample=config.num_heads_upsample,
        use_scale_shift_norm=config.use_scale_shift_norm, dropout=config.dropout,
        resblock_updown=config.resblock_updown, use_fp16=False,
        use_new_attention_order=config.use_new_attention_order, conf=conf)
    model.load_state_dict(net.state_dict(), strict=True)
    return model.eval().requires_grad_(False)


def reference_diffusion(ref: dict, trained, conf):
    """Its SpacedDiffusion for our training process. Its ``get_named_beta_schedule`` knows only "linear", so a cosine
    model's base betas are ours (the same float64 formula as upstream guided-diffusion)."""
    gd = ref["gaussian_diffusion"]
    if trained.noise_schedule == "linear":
        betas = gd.get_named_beta_schedule("linear", trained.steps, use_scale=True)
    else:
        betas = beta_schedule(trained.noise_schedule, trained.steps)
    return ref["respace"].SpacedDiffusion(
        use_timesteps=ref["respace"].space_timesteps(trained.steps, conf.timestep_respacing), betas=betas,
        model_mean_type=gd.ModelMeanType.EPSILON, model_var_type=gd.ModelVarType.LEARNED_RANGE,
        loss_type=gd.LossType.MSE, rescale_timesteps=False, conf=conf)


# ----------------------------------------------------------------------------------------------------------------
# diffusers


def diffusers_parts(net: torch.nn.Module, config, trained):
    """(UNet2DModel returning the eps half, RePaintScheduler) of our network and training process, converted by the
    exporter's own functions; None when diffusers is not installed."""
    try:
        import diffusers
    except ImportError:
        return None
    from repaint.checkpoints.diffusers_export import diffusers_state_dict, diffusers_unet_config, scheduler_config

    diffusers.utils.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning, module="diffusers")  # the deprecated pipeline says so
    channels = config.in_channels

    class EpsHalf(diffusers.UNet2DModel):
        def forward(self, sample, timestep, *args, **kwargs):
            out = super().forward(sample, timestep, *args, **kwargs)
            return type(out)(sample=out.sample[:, :channels])

    unet = EpsHalf(**diffusers_unet_config(config, net))
    unet.load_state_dict(diffusers_state_dict(config, net), strict=True)
    scheduler = diffusers.RePaintScheduler.from_config(scheduler_config(trained))
    return unet.eval().requires_grad_(False), scheduler


# ----------------------------------------------------------------------------------------------------------------
# The arms


def make_arms(net, config, trained, batch: int, schedule, ref, dparts) -> tuple[dict, dict]:
    """{arm name: zero-argument callable doing one run}, {family: [network seconds] accumulated by hooks}."""
    steps, jump, resamplings = schedule
    walk = JumpSchedule(steps, jump_length=jump, jump_n_sample=resamplings)
    times, calls = walk.times(), walk.network_calls()
    gt, keep = face_and_mask(config.image_size, batch)
    x = torch.randn(gt.shape, generator=torch.Generator().manual_seed(1))
    t = torch.full((batch,), 500, dtype=torch.int64)
    diffusion = our_diffusion(trained, steps)
    model = unet_model_fn(net)
    arms = {
        "ours floor": lambda: [net(x, t) for _ in range(calls)],
        "ours loop": lambda: repaint(model, diffusion, times, gt, keep, generators=make_generators(range(batch)),
                                     clip_denoised=trained.clip_sample),
    }
    hooked = {"ours": time_network_calls(net)}
    if ref is not None:
        ref_net, ref_diffusion, conf = ref["net"], ref["diffusion"], ref["conf"]
        kwargs = dict(gt=gt, gt_keep_mask=keep)
        arms["reference floor"] = lambda: [ref_net(x, t) for _ in range(calls)]
        arms["reference loop"] = lambda: ref_diffusion.p_sample_loop(
            ref_net, tuple(gt.shape), clip_denoised=trained.clip_sample, model_kwargs=kwargs, device="cpu",
            progress=False, conf=conf)
        hooked["reference"] = time_network_calls(ref_net)
    if dparts is not None:
        import diffusers

        unet, scheduler = dparts
        pipe = diffusers.RePaintPipeline(unet=unet, scheduler=scheduler)
        pipe.set_progress_bar_config(disable=True)
        t0 = torch.tensor(500)
        arms["diffusers floor"] = lambda: [unet(x, t0).sample for _ in range(calls)]
        arms["diffusers loop"] = lambda: pipe(gt, keep, num_inference_steps=steps, eta=1.0, jump_length=jump,
                                              jump_n_sample=resamplings, generator=torch.Generator().manual_seed(0),
                                              output_type="np")
        hooked["diffusers"] = time_network_calls(unet)
    return arms, hooked


def time_arms(arms: dict, hooked: dict, repeats: int, warmup: bool = True) -> dict:
    """Warm-up (one untimed run per arm), then ``repeats`` rounds of every arm once, order rotated per round; seconds
    and hooked network seconds per arm and round, and the load average per round."""
    names = list(arms)
    result = {name: {"seconds": [], "network_seconds": []} for name in names}
    loads = []
    with torch.no_grad():
        for name in names if warmup else ():
            arms[name]()
        for round_ in range(repeats):
            loads.append(os.getloadavg())
            for name in names[round_ % len(names):] + names[:round_ % len(names)]:
                hook = hooked[name.split()[0]]
                hook[0] = 0.0
                start = time.perf_counter()
                arms[name]()
                result[name]["seconds"].append(time.perf_counter() - start)
                result[name]["network_seconds"].append(hook[0])
    return {"arms": result, "load_average_1_5_15": loads}


def spread(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def summarise(timed: dict, calls: int) -> dict:
    """Per arm: seconds, ms per network call; per loop: ratio to its own floor and to ours (within each round), and
    its time outside the network calls (hooks) as a fraction of the network time in the same run."""
    arms = timed["arms"]
    out = {}
    for name, record in arms.items():
        per_call = [1e3 * s / calls for s in record["seconds"]]
        row = {"seconds": spread(record["seconds"]), "ms_per_call": spread(per_call)}
        family, kind = name.split()
        if kind == "loop":
            own = arms[f"{family} floor"]["seconds"]
            ours = arms["ours floor"]["seconds"]
            row["ratio_to_own_floor"] = spread([a / b for a, b in zip(record["seconds"], own)])
            row["ratio_to_our_floor"] = spread([a / b for a, b in zip(record["seconds"], ours)])
            row["outside_network_fraction"] = spread(
                [(s - n) / n for s, n in zip(record["seconds"], record["network_seconds"])])
        out[name] = row
    return out


# ----------------------------------------------------------------------------------------------------------------
# Agreement


def agreement(net, config, trained, ref: dict, schedule, batch: int, seed: int = 0) -> float:
    """Largest |ours - reference| of the two loops on the same noise (no final paste: the reference has none)."""
    steps, jump, resamplings = schedule
    times = JumpSchedule(steps, jump_length=jump, jump_n_sample=resamplings).times()
    gt, keep = face_and_mask(config.image_size, batch)
    diffusion = our_diffusion(trained, steps)
    with torch.no_grad():
        torch.manual_seed(seed)
        theirs = ref["diffusion"].p_sample_loop(ref["net"], tuple(gt.shape), clip_denoised=True,
                                                model_kwargs=dict(gt=gt, gt_keep_mask=keep), device="cpu",
                                                progress=False, conf=ref["conf"])
        torch.manual_seed(seed)
        ours = repaint(unet_model_fn(net), diffusion, times, gt, keep, noise_fn=lambda like: torch.randn(like.shape),
                       clip_denoised=True, paste_known=False)
    return float((ours - theirs).abs().max())


# ----------------------------------------------------------------------------------------------------------------


def print_table(network: str, batch: int, calls: int, summary: dict) -> None:
    def fmt(s: dict, scale: float = 1.0, digits: int = 3) -> str:
        return " / ".join(f"{scale * s[k]:.{digits}f}" for k in ("min", "median", "max"))

    print(f"\n{network}, batch {batch}, {calls} network calls per run")
    print("| arm | s per run (min / median / max) | ms per call, median | ratio to own floor | ratio to our floor "
          "| outside network calls, % of network time |")
    print("|---|---|---|---|---|---|")
    for name, row in summary.items():
        loop = "ratio_to_own_floor" in row
        print(f"| {name} | {fmt(row['seconds'])} | {row['ms_per_call']['median']:.1f} | "
              f"{fmt(row['ratio_to_own_floor']) if loop else '-'} | {fmt(row['ratio_to_our_floor']) if loop else '-'} "
              f"| {fmt(row['outside_network_fraction'], 100, 2) if loop else '-'} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--network", nargs="+", choices=tuple(SCHEDULES), default=["face64"])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--schedule", type=int, nargs=3, metavar=("T", "JUMP", "RESAMPLINGS"),
                        help="override the network's short schedule (face64: 25 5 2, adm256: 3 1 2)")
    parser.add_argument("--reference", type=Path, help="a checkout of andreas128/RePaint (imported at run time)")
    parser.add_argument("--no-diffusers", action="store_true", help="leave out the RePaintPipeline arms")
    parser.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=True,
                        help="one untimed run of every arm first (--no-warmup for the 256² model: eager first calls "
                             "cost what later ones do, and each run takes minutes)")
    parser.add_argument("--agreement", action=argparse.BooleanOptionalAction, default=True,
                        help="compare our loop's result with the reference's on the same noise")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="set glibc's malloc as the repaint program sets it at start "
                             "(repaint.accel.keep_freed_memory), for every arm alike")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/loop_overhead_cpu.json")
    args = parser.parse_args(argv)
    if args.keep_freed_memory:
        from repaint.accel import keep_freed_memory

        if not keep_freed_memory():
            parser.error("--keep-freed-memory: this C library has no mallopt (glibc only)")
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or parallel work has started (a caller that imported us): leave it
        pass

    modules = import_reference(args.reference.resolve()) if args.reference else None
    not_run = {}
    if modules is None:
        not_run["reference"] = f"not run: {GET_REFERENCE}"
    record = dict(
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), argv=sys.argv[1:], torch=torch.__version__,
        python=platform.python_version(), cpu=_cpu_name(), cpus=os.cpu_count(), torch_threads=torch.get_num_threads(),
        reference=_reference_version(args.reference), diffusers=_diffusers_version(), not_run=not_run, networks={})
    for network in args.network:
        net, config, trained = load_network(network)
        schedule = tuple(args.schedule or SCHEDULES[network])
        calls = JumpSchedule(schedule[0], jump_length=schedule[1], jump_n_sample=schedule[2]).network_calls()
        ref = None
        if modules is not None:
            conf = reference_conf(modules, schedule)
            ref = dict(conf=conf, net=reference_network(modules, net, config, conf),
                       diffusion=reference_diffusion(modules, trained, conf))
        dparts = None if args.no_diffusers else diffusers_parts(net, config, trained)
        if dparts is None and not args.no_diffusers:
            not_run["diffusers"] = "not run: diffusers is not installed (pip install -e '.[diffusers]')"
        entry = dict(schedule=dict(T=schedule[0], jump_length=schedule[1], resamplings=schedule[2],
                                   network_calls=calls), batches={})
        for batch in args.batch:
            arms, hooked = make_arms(net, config, trained, batch, schedule, ref, dparts)
            timed = time_arms(arms, hooked, args.repeats, args.warmup)
            summary = summarise(timed, calls)
            result = dict(summary=summary, **timed)
            if ref is not None and args.agreement:
                result["max_abs_difference_ours_vs_reference"] = agreement(net, config, trained, ref, schedule, batch)
            entry["batches"][str(batch)] = result
            print_table(network, batch, calls, summary)
            print("load average (1 min) per round: " + ", ".join(f"{la[0]:.2f}" for la in timed["load_average_1_5_15"]))
            if "max_abs_difference_ours_vs_reference" in result:
                print(f"ours vs reference, same noise: max |difference| = "
                      f"{result['max_abs_difference_ours_vs_reference']:.2e}")
            _remove_hooks(net, ref, dparts)  # the next batch size hooks them afresh
        record["networks"][network] = entry
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1) + "\n")
    for name, why in not_run.items():
        print(f"{name}: {why}")
    return 0


def _remove_hooks(net, ref, dparts) -> None:
    for module in (net, ref and ref["net"], dparts and dparts[0]):
        if module is not None:
            module._forward_hooks.clear()
            module._forward_pre_hooks.clear()


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _reference_version(path: Path | None) -> str | None:
    if path is None:
        return None
    head = path / ".git" / "HEAD"
    return f"{path} (git HEAD {head.read_text().strip()})" if head.is_file() else str(path)


def _diffusers_version() -> str | None:
    try:
        import diffusers
    except ImportError:
        return None
    return diffusers.__version__


if __name__ == "__main__":
    sys.exit(main())
