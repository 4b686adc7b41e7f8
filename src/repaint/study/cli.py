"""``repaint study``: create a 2AFC study from result folders, serve it to participants, report the votes.

Thin: each command calls one function of :mod:`repaint.study`. Bad input ends in one line on stderr,
``repaint: error: ...``, exit status 2, and nothing written.
"""

from __future__ import annotations

import functools
import sqlite3
from pathlib import Path

import click

from .store import StudyError

_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110, "show_default": True}


def _errors(command):
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except (StudyError, ValueError, OSError, sqlite3.Error) as err:
            text = " ".join((str(err).strip() or type(err).__name__).split())
            click.echo(f"repaint: error: {text}", err=True)
            raise click.exceptions.Exit(2) from None

    return wrapper


@click.group(context_settings=_CONTEXT)
def study() -> None:
    """Two-alternative forced-choice user study (the paper's §5.2): which of two fills looks more realistic?

    \b
    Examples:
      repaint study create study.db eval/repaint eval/lama --reference repaint --per-participant 60
      repaint study serve study.db                    (then open http://127.0.0.1:8765)
      repaint study report study.db --out study_report
    """


@study.command(context_settings=_CONTEXT)
@click.argument("study_file", metavar="STUDY", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("sources", metavar="[NAME=]FOLDER...", nargs=-1, required=True)
@click.option("--masked", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of masked inputs (NAME.png or SETTING/NAME.png); needed when the result folders are "
                   "plain PNG folders without gt_masked/.")
@click.option("--reference", default=None, help="Compare every other method against this one only (the paper's "
                                                "layout). Default: every pair of methods.")
@click.option("--per-participant", type=click.IntRange(min=1), default=None,
              help="Pairs shown to each participant before repeats (the least-seen pairs first). Default: all.")
@click.option("--repeat-share", type=click.FloatRange(0, 1), default=0.1,
              help="Share of a participant's pairs shown again later, sides swapped, to measure self-consistency.")
@click.option("--seed", type=int, default=0, help="Seed of the per-participant draws (pairs, sides, order, repeats).")
@click.option("--title", default="Which image looks more realistic?", help="Heading of the study page.")
@_errors
def create(study_file, sources, masked, reference, per_participant, repeat_share, seed, title) -> None:
    """Build STUDY (an SQLite file) from two or more result folders of the same images and masks.

    A folder is the output of `repaint eval` (SETTING/inpainted/NAME_sSEED.png; the lowest seed is shown),
    of `repaint inpaint` (inpainted/, gt_masked/), or plain NAME.png fills. The method is named after the folder,
    or NAME=FOLDER. Folders that do not line up (missing or extra images, other sizes, other masks) are refused.

    \b
    Examples:
      repaint study create study.db eval/repaint eval/lama eval/ddnm
      repaint study create study.db ours=runs/a/fills theirs=runs/b/fills --masked runs/a/masked
    """
    from .store import create_study

    summary = create_study(study_file, list(sources), masked=masked, reference=reference,
                           per_participant=per_participant, repeat_share=repeat_share, seed=seed, title=title)
    click.echo(f"{study_file}: {len(summary['methods'])} methods ({', '.join(summary['methods'])}), "
               f"{summary['items']} images in {len(summary['settings'])} setting(s), {summary['pairs']} pairs, "
               f"{summary['per_participant']} per participant (+{repeat_share:.0%} repeats)")


@study.command(context_settings=_CONTEXT)
@click.argument("study_file", metavar="STUDY", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", help="Address to bind; 0.0.0.0 exposes the study to your network.")
@click.option("--port", type=click.IntRange(1, 65535), default=8765, help="Port to listen on.")
@click.option("--enrol-limit", type=click.IntRange(min=1), default=10, show_default=True,
              help="New participants one client address may enrol per minute (raise it for a lab behind one NAT).")
@_errors
def serve(study_file, host, port, enrol_limit) -> None:
    """Serve STUDY's page: one pair at a time, keys 1/2 or arrow keys or clicks; votes go into STUDY.

    Participants open http://HOST:PORT/ (or /?pid=ID to fill in their id) and may stop and come back with the
    same id in the same browser (enrolment gives that browser the id's key, a cookie). Stop the server with Ctrl-C;
    the votes are already on disk.

    \b
    Example:
      repaint study serve study.db --port 8765
    """
    try:
        import uvicorn

        from .server import make_app
    except ImportError as err:
        raise StudyError(f"repaint study serve needs fastapi and uvicorn (pip install 'repaint[study]'): {err}") \
            from None
    app = make_app(study_file, enrol_limit=enrol_limit)

    click.echo(f"study page at http://{host}:{port}/  (Ctrl-C to stop)")
    uvicorn.run(app, host=host, port=port, log_level="warning")


@study.command(context_settings=_CONTEXT)
@click.argument("study_file", metavar="STUDY", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for report.md, report.csv, participants.csv, report.png. Default: STUDY_report/ beside "
                   "STUDY.")
@click.option("--n-boot", type=click.IntRange(min=100), default=2000, help="Bootstrap draws over participants.")
@click.option("--seed", type=int, default=0, help="Seed of the bootstrap.")
@click.option("--exclude-flagged", is_flag=True, help="Leave out participants below chance on repeated pairs.")
@click.option("--flag-alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.05,
              help="Flag a participant when their agreement on repeats is below 50 % with one-sided binomial p below "
                   "this.")
@click.option("--plot/--no-plot", default=True, help="Write report.png (needs matplotlib).")
@_errors
def report(study_file, out, n_boot, seed, exclude_flagged, flag_alpha, plot) -> None:
    """Vote share per method and mask setting with 95 % intervals (bootstrap over participants), and each
    participant's self-consistency; prints the Markdown table and writes the files.

    \b
    Example:
      repaint study report study.db --out study_report --exclude-flagged
    """
    from .report import build_report, report_markdown, write_report

    result = build_report(study_file, n_boot=n_boot, seed=seed, exclude_flagged=exclude_flagged,
                          flag_alpha=flag_alpha)
    out = out or study_file.with_name(f"{study_file.stem}_report")
    if plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise StudyError("the plot needs matplotlib (pip install matplotlib), or pass --no-plot") from None
    paths = write_report(result, out, plot=plot)
    click.echo(report_markdown(result), nl=False)
    click.echo(f"\nwrote {', '.join(str(p) for p in paths)}")
