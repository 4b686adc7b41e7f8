"""A two-alternative forced-choice (2AFC) user study of inpainting results, after the paper's §5.2.

Participants see the masked input and two fills of it and pick the more realistic one; each method's vote share is
reported with a 95 % interval that treats a participant's votes as one cluster.

    store.py   the SQLite study file: sources that line up, pairs, per-participant trials, votes (atomic, unique)
    server.py  the FastAPI page and its JSON calls (thin over store.py)
    report.py  vote shares with a cluster bootstrap over participants, self-consistency, CSV/Markdown/plot
    cli.py     the click group ``study``: create, serve, report
"""

from .store import StudyError, create_study, next_trial, record_vote  # noqa: F401
