"""The study file: one SQLite database that holds the images, the pairs to compare, each participant's trials and votes.

A *source* is one method's results: the output folder of ``repaint eval`` (``SETTING/inpainted/NAME_sSEED.png`` with
``SETTING/gt_masked/NAME.png``; the lowest seed of an image is shown), the output folder of ``repaint inpaint``
(``inpainted/`` and ``gt_masked/``, one setting called ``default``) or a plain folder of ``NAME.png`` fills (then the
masked inputs come from ``masked=``). All sources must hold the same (setting, image) items at the same sizes, and
where two sources carry masked inputs these must be equal pixel for pixel: otherwise :func:`create_study` raises one
:class:`StudyError` that names what does not line up, and writes nothing.

A *pair* is one item and two methods. When a participant first asks for a trial, the server draws their trials in one
transaction: the ``per_participant`` pairs seen least often so far (ties broken at random), a random left/right side
for each, a random order, and a share ``repeat_share`` of them shown a second time later, sides swapped, to measure
self-consistency. Draws go through a ``torch.Generator`` seeded from the study seed and the participant's number, and
are stored, so a returning participant continues where they stopped.

A vote is one UPDATE of the participant's current trial guarded by ``choice IS NULL``: it is unique per (participant,
trial), a second submit is ignored, and a vote for any trial but the one the server has served is refused. Response
time is measured by the server from serving to receiving the vote; the browser's own timer (from the moment the
images were shown) is kept when it is consistent with that (not longer), else the server's time is used.

Image tokens are random (``secrets``), not experimental draws: they only hide which file an image is.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

__all__ = [
    "PARTICIPANT_RE", "RT_TOLERANCE_MS", "SCHEMA_VERSION", "Source", "StudyConflict", "StudyError", "Vote", "connect",
    "create_study", "image_png", "next_trial", "read_source", "record_vote", "study_info", "StudyDenied", "enrol",
    "check_key",
]

SCHEMA_VERSION = 1
DEFAULT_SETTING = "default"
RT_TOLERANCE_MS = 250.0           # the browser's timer may exceed the server's by this much (clock granularity)
PARTICIPANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
TOKEN_RE = re.compile(r"^[0-9a-f]{32}$")
_SAMPLE_RE = re.compile(r"^(?P<name>.+)_s(?P<seed>\d+)$")

_SCHEMA = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE methods(id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, source TEXT NOT NULL);
CREATE TABLE images(id INTEGER PRIMARY KEY, token TEXT UNIQUE NOT NULL, png BLOB NOT NULL);
CREATE TABLE items(id INTEGER PRIMARY KEY, setting TEXT NOT NULL, name TEXT NOT NULL,
                   masked INTEGER NOT NULL REFERENCES images(id), UNIQUE(setting, name));
CREATE TABLE fills(item INTEGER NOT NULL REFERENCES items(id), method INTEGER NOT NULL REFERENCES methods(id),
                   image INTEGER NOT NULL REFERENCES images(id), PRIMARY KEY(item, method));
CREATE TABLE pairs(id INTEGER PRIMARY KEY, item INTEGER NOT NULL REFERENCES items(id),
                   method_a INTEGER NOT NULL REFERENCES methods(id), method_b INTEGER NOT NULL REFERENCES methods(id),
                   UNIQUE(item, method_a, method_b), CHECK(method_a <> method_b));
CREATE TABLE participants(id TEXT PRIMARY KEY, number INTEGER UNIQUE NOT NULL, joined REAL NOT NULL);
CREATE TABLE trials(token TEXT PRIMARY KEY, participant TEXT NOT NULL REFERENCES participants(id),
                    position INTEGER NOT NULL, pair INTEGER NOT NULL REFERENCES pairs(id),
                    left_method INTEGER NOT NULL REFERENCES methods(id),
                    right_method INTEGER NOT NULL REFERENCES methods(id),
                    repeat_of INTEGER,              -- position of the first showing of this pair, NULL if first
                    served REAL,                    -- time.time() of the last serving
                    choice INTEGER REFERENCES methods(id), side TEXT CHECK(side IN ('left', 'right')),
                    rt_ms REAL, rt_client_ms REAL, rt_server_ms REAL, voted REAL,
                    UNIQUE(participant, position));
CREATE INDEX trials_pair ON trials(pair);
"""


class StudyError(ValueError):
    """A study that cannot be built or used as asked (sources that do not line up, a bad vote, not a study file)."""


class StudyDenied(StudyError):
    """The request does not carry the participant's key (or the participant id is someone else's)."""


class StudyConflict(StudyError):
    """A vote for a trial that is not the participant's current one (the client is out of step with the server)."""


# ---------------------------------------------------------------------------------------------------------------
# Sources: one method's result folder.
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class Source:
    """One method's fills, keyed by (setting, image name), with the masked inputs where the folder has them."""

    name: str
    path: Path
    fills: dict[tuple[str, str], Path] = field(default_factory=dict)
    masked: dict[tuple[str, str], Path] = field(default_factory=dict)


def _lowest_seed_fills(inpainted: Path) -> dict[str, Path]:
    best: dict[str, tuple[int, Path]] = {}
    for path in sorted(inpainted.glob("*.png")):
        match = _SAMPLE_RE.match(path.stem)
        name, seed = (match["name"], int(match["seed"])) if match else (path.stem, -1)
        if name not in best or seed < best[name][0]:
            best[name] = (seed, path)
    return {name: path for name, (_, path) in best.items()}


def _read_setting(source: Source, setting: str, folder: Path) -> None:
    for name, path in _lowest_seed_fills(folder / "inpainted").items():
        source.fills[(setting, name)] = path
        masked = folder / "gt_masked" / f"{name}.png"
        if masked.is_file():
            source.masked[(setting, name)] = masked


def read_source(path: str | os.PathLike, name: str | None = None) -> Source:
    """Read one result folder (``repaint eval`` output, ``repaint inpaint`` output, or plain PNGs)."""
    root = Path(path)
    if not root.is_dir():
        raise StudyError(f"result folder {root} does not exist or is not a folder")
    source = Source(name or root.resolve().name, root)
    if (root / "inpainted").is_dir():
        _read_setting(source, DEFAULT_SETTING, root)
    else:
        settings = sorted(d for d in root.iterdir() if (d / "inpainted").is_dir())
        for folder in settings:
            _read_setting(source, folder.name, folder)
        if not settings:
            source.fills = {(DEFAULT_SETTING, p.stem): p for p in sorted(root.glob("*.png"))}
    if not source.fills:
        raise StudyError(f"result folder {root} holds no PNG fills (expected NAME.png, inpainted/NAME_sSEED.png "
                         "or SETTING/inpainted/NAME_sSEED.png)")
    return source


def _parse_spec(spec: str | os.PathLike | tuple[str, str | os.PathLike]) -> tuple[str | None, Path]:
    if isinstance(spec, tuple):
        return spec[0], Path(spec[1])
    text = str(spec)
    if "=" in text and not Path(text).exists():
        name, _, path = text.partition("=")
        if not name:
            raise StudyError(f"empty method name in {text!r} (write NAME=FOLDER)")
        return name, Path(path)
    return None, Path(text)


def _few(keys: Sequence[tuple[str, str]], limit: int = 3) -> str:
    shown = ", ".join(f"{s}/{n}" if s != DEFAULT_SETTING else n for s, n in sorted(keys)[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def _check_line_up(sources: list[Source]) -> list[tuple[str, str]]:
    first = sources[0]
    keys = set(first.fills)
    for other in sources[1:]:
        missing, extra = keys - set(other.fills), set(other.fills) - keys
        if missing or extra:
            parts = ([f"missing {_few(list(missing))}"] if missing else []) + \
                    ([f"extra {_few(list(extra))}"] if extra else [])
            raise StudyError(f"result folders do not line up: {other.path} (method {other.name}) against {first.path} "
                             f"(method {first.name}): {'; '.join(parts)}")
    return sorted(keys)


def _masked_paths(sources: list[Source], keys: list[tuple[str, str]], masked: Path | None) -> dict:
    paths = {}
    for key in keys:
        setting, name = key
        if masked is not None:
            candidates = [masked / setting / f"{name}.png"] + ([masked / f"{name}.png"]
                                                                if setting == DEFAULT_SETTING else [])
            found = next((p for p in candidates if p.is_file()), None)
        else:
            found = next((s.masked[key] for s in sources if key in s.masked), None)
        if found is None:
            where = f"in {masked}" if masked is not None else "in gt_masked/ of any result folder (give --masked)"
            raise StudyError(f"no masked input for {_few([key])} {where}")
        paths[key] = found
    return paths


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            return img.size
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise StudyError(f"cannot read image {path}: {err}") from None


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def _check_images(sources: list[Source], keys: list[tuple[str, str]], masked: dict) -> None:
    """Same size for every fill and the masked input; equal masked inputs wherever two sources carry one."""
    for key in keys:
        sizes = {"masked input": _image_size(masked[key])}
        sizes.update({f"method {s.name}": _image_size(s.fills[key]) for s in sources})
        if len(set(sizes.values())) > 1:
            shown = ", ".join(f"{who} {w}x{h}" for who, (w, h) in sizes.items())
            raise StudyError(f"images of {_few([key])} have different sizes: {shown}")
        carried = [s for s in sources if key in s.masked and s.masked[key] != masked[key]]
        if carried:
            reference = _pixels(masked[key])
            for s in carried:
                if not np.array_equal(_pixels(s.masked[key]), reference):
                    raise StudyError(f"method {s.name} has a different masked input for {_few([key])} than "
                                     f"{masked[key]}: the result folders are not of the same images and masks")


# ---------------------------------------------------------------------------------------------------------------
# The database.
# ---------------------------------------------------------------------------------------------------------------

def _open(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    con.row_factory = sqlite3.Row
    con.execute("PRAGMA foreign_keys = ON")
    con.execute("PRAGMA busy_timeout = 30000")
    return con


def connect(path: str | os.PathLike) -> sqlite3.Connection:
    """Open a study file (WAL mode, so that readers and one writer work at once); refuses anything else."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"study file {path} does not exist (make one with `repaint study create`)")
    try:
        con = _open(path)
        con.execute("PRAGMA journal_mode = WAL")
        row = con.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
    except sqlite3.DatabaseError as err:
        raise StudyError(f"{path} is not a study file ({err})") from None
    if row is None or json.loads(row["value"]) != SCHEMA_VERSION:
        raise StudyError(f"{path} is not a study file of version {SCHEMA_VERSION}")
    return con


@contextmanager
def _write(con: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction, taken at once (BEGIN IMMEDIATE), so that read-then-write steps are atomic."""
    con.execute("BEGIN IMMEDIATE")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def _meta(con: sqlite3.Connection) -> dict:
    return {row["key"]: json.loads(row["value"]) for row in con.execute("SELECT key, value FROM meta")}


def _add_image(con: sqlite3.Connection, path: Path) -> int:
    cur = con.execute("INSERT INTO images(token, png) VALUES (?, ?)", (secrets.token_hex(16), path.read_bytes()))
    return cur.lastrowid


def create_study(
    out: str | os.PathLike,
    sources: Sequence[str | os.PathLike | tuple[str, str | os.PathLike]],
    *,
    masked: str | os.PathLike | None = None,
    reference: str | None = None,
    per_participant: int | None = None,
    repeat_share: float = 0.1,
    seed: int = 0,
    title: str = "Which image looks more realistic?",
) -> dict:
    """Build a study file from two or more result folders of the same images and masks.

    Args:
        out: the study file to write; must not exist. It appears only once complete.
        sources: result folders, each a path, ``"NAME=PATH"`` or ``(NAME, PATH)``; the method is named after the
            folder unless named.
        masked: folder of masked inputs (``NAME.png``, or ``SETTING/NAME.png``), needed for plain folders of fills.
        reference: compare every other method against this one only (the paper's layout); default: all pairs.
        per_participant: pairs shown to each participant (before repeats); default: every pair.
        repeat_share: share of a participant's pairs shown a second time, sides swapped (self-consistency).
        seed: seeds the per-participant draws (pairs, sides, order, repeats).

    Returns: a summary (methods, settings, items, pairs).
    """
    out = Path(out)
    if out.exists():
        raise StudyError(f"{out} exists already; choose another file or remove it")
    if not 0 <= repeat_share <= 1:
        raise StudyError(f"repeat share must be in [0, 1], got {repeat_share}")
    if per_participant is not None and per_participant < 1:
        raise StudyError(f"pairs per participant must be at least 1, got {per_participant}")
    if len(sources) < 2:
        raise StudyError(f"a study needs two or more result folders, got {len(sources)}")
    read = [read_source(path, name) for name, path in map(_parse_spec, sources)]
    names = [s.name for s in read]
    if len(set(names)) < len(names):
        raise StudyError(f"two result folders share a method name ({', '.join(names)}); name them NAME=FOLDER")
    if reference is not None and reference not in names:
        raise StudyError(f"reference method {reference!r} is not one of {', '.join(names)}")
    keys = _check_line_up(read)
    masked_paths = _masked_paths(read, keys, Path(masked) if masked is not None else None)
    _check_images(read, keys, masked_paths)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        con = _open(tmp)
        con.executescript(_SCHEMA)
        summary = _fill(con, read, keys, masked_paths, reference, per_participant, repeat_share, seed, title)
        con.close()
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return summary


def _fill(con, read, keys, masked_paths, reference, per_participant, repeat_share, seed, title) -> dict:
    with _write(con):
        meta = {"version": SCHEMA_VERSION, "seed": int(seed), "per_participant": per_participant,
                "repeat_share": float(repeat_share), "reference": reference, "title": title,
                "created": time.time()}
        con.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
        method_ids = {}
        for s in read:
            method_ids[s.name] = con.execute("INSERT INTO methods(name, source) VALUES (?, ?)",
                                             (s.name, str(s.path.resolve()))).lastrowid
        ids = list(method_ids.values())
        if reference is None:
            combos = list(combinations(ids, 2))
        else:
            combos = [(method_ids[reference], i) for i in ids if i != method_ids[reference]]
        for key in keys:
            item = con.execute("INSERT INTO items(setting, name, masked) VALUES (?, ?, ?)",
                               (*key, _add_image(con, masked_paths[key]))).lastrowid
            for s in read:
                image = _add_image(con, s.fills[key])
                con.execute("INSERT INTO fills VALUES (?, ?, ?)", (item, method_ids[s.name], image))
            con.executemany("INSERT INTO pairs(item, method_a, method_b) VALUES (?, ?, ?)",
                            [(item, a, b) for a, b in combos])
    n_pairs = con.execute("SELECT count(*) FROM pairs").fetchone()[0]
    return {"methods": list(method_ids), "settings": sorted({s for s, _ in keys}), "items": len(keys),
            "pairs": n_pairs, "per_participant": min(per_participant or n_pairs, n_pairs)}


def study_info(con: sqlite3.Connection) -> dict:
    """The study's settings, methods and counts."""
    meta = _meta(con)
    meta["methods"] = [r["name"] for r in con.execute("SELECT name FROM methods ORDER BY id")]
    meta["settings"] = [r["setting"] for r in con.execute("SELECT DISTINCT setting FROM items ORDER BY setting")]
    meta["pairs"] = con.execute("SELECT count(*) FROM pairs").fetchone()[0]
    meta["participants"] = con.execute("SELECT count(*) FROM participants").fetchone()[0]
    meta["votes"] = con.execute("SELECT count(*) FROM trials WHERE choice IS NOT NULL").fetchone()[0]
    return meta


# ---------------------------------------------------------------------------------------------------------------
# Participants: drawing trials, serving them, recording votes.
# ---------------------------------------------------------------------------------------------------------------

def _generator(seed: int, number: int) -> torch.Generator:
    digest = hashlib.sha256(f"repaint-study:{seed}:{number}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def _draw_trials(con: sqlite3.Connection, meta: dict, participant: str, number: int) -> list[tuple]:
    """The participant's trials: least-seen pairs, random sides and order, repeats later with sides swapped."""
    g = _generator(meta["seed"], number)
    seen = dict(con.execute("SELECT pair, count(*) FROM trials WHERE repeat_of IS NULL GROUP BY pair").fetchall())
    pairs = con.execute("SELECT id, method_a, method_b FROM pairs ORDER BY id").fetchall()
    tie = torch.rand(len(pairs), generator=g).tolist()
    order = sorted(range(len(pairs)), key=lambda i: (seen.get(pairs[i]["id"], 0), tie[i]))
    chosen = [pairs[i] for i in order[: min(meta["per_participant"] or len(pairs), len(pairs))]]
    chosen = [chosen[i] for i in torch.randperm(len(chosen), generator=g).tolist()]
    flips = torch.randint(0, 2, (len(chosen),), generator=g).tolist()
    sequence = [(p["id"], (p["method_a"], p["method_b"])[f], (p["method_b"], p["method_a"])[f], None)
                for p, f in zip(chosen, flips)]
    n_repeat = round(meta["repeat_share"] * len(chosen))
    repeats = [sequence[i] for i in sorted(torch.randperm(len(chosen), generator=g)[:n_repeat].tolist())]
    for pair, left, right, _ in repeats:
        at = next(i for i, t in enumerate(sequence) if t[0] == pair and t[3] is None)
        lo = min(at + 2, len(sequence))   # at least one other trial in between when possible
        slot = lo + int(torch.randint(0, len(sequence) - lo + 1, (1,), generator=g))
        sequence.insert(slot, (pair, right, left, "repeat"))
    rows, first_position = [], {}
    for position, (pair, left, right, kind) in enumerate(sequence):
        if kind is None:
            first_position[pair] = position
        rows.append((secrets.token_hex(16), participant, position, pair, left, right,
                     first_position[pair] if kind else None))
    return rows


def _join(con: sqlite3.Connection, participant: str) -> None:
    if not PARTICIPANT_RE.match(participant or ""):
        raise StudyError("participant id must be 1-64 letters, digits or _ . @ - (starting with a letter or digit)")
    if con.execute("SELECT 1 FROM participants WHERE id = ?", (participant,)).fetchone():
        return                                  # known: no write lock needed
    with _write(con):
        if con.execute("SELECT 1 FROM participants WHERE id = ?", (participant,)).fetchone():
            return
        number = con.execute("SELECT coalesce(max(number) + 1, 0) FROM participants").fetchone()[0]
        con.execute("INSERT INTO participants VALUES (?, ?, ?)", (participant, number, time.time()))
        con.executemany("INSERT INTO trials(token, participant, position, pair, left_method, right_method, repeat_of)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)", _draw_trials(con, _meta(con), participant, number))


# Keys: the id a participant types is not a credential (ids are short and guessable). At enrolment the server issues
# a random key and stores only its hash; every later request for that participant must carry it. The table is added
# to older study files when first needed, so their votes stay readable.
_KEYS = ("CREATE TABLE IF NOT EXISTS participant_keys(participant TEXT PRIMARY KEY REFERENCES participants(id), "
         "key_hash TEXT NOT NULL)")


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def enrol(con: sqlite3.Connection, participant: str) -> str:
    """Join ``participant`` (drawing their trials) and return their new secret key; :class:`StudyDenied` if the id
    has a key already (someone enrolled with it). A participant who joined before keys existed claims a key once."""
    _join(con, participant)
    key = secrets.token_urlsafe(32)
    con.execute(_KEYS)
    with _write(con):
        if con.execute("SELECT 1 FROM participant_keys WHERE participant = ?", (participant,)).fetchone():
            raise StudyDenied("this participant id is taken; continue in the browser you started in, or choose "
                              "another id")
        con.execute("INSERT INTO participant_keys VALUES (?, ?)", (participant, _hash(key)))
    return key


def check_key(con: sqlite3.Connection, participant: str, key: str | None) -> bool:
    """Whether ``key`` is ``participant``'s (compared in constant time)."""
    con.execute(_KEYS)
    row = con.execute("SELECT key_hash FROM participant_keys WHERE participant = ?", (participant,)).fetchone()
    return bool(row is not None and key and secrets.compare_digest(row[0], _hash(key)))


def _fill_token(con: sqlite3.Connection, item: int, method: int) -> str:
    return con.execute("SELECT i.token FROM fills f JOIN images i ON i.id = f.image WHERE f.item = ? AND f.method = ?",
                       (item, method)).fetchone()[0]


def next_trial(con: sqlite3.Connection, participant: str, now: float | None = None) -> dict:
    """The participant's current trial (joining them if new), marked as served now.

    Returns ``{"done": bool, "answered": int, "total": int, "trial": {...} or None}``; a trial holds its ``token``
    and the image tokens ``masked``, ``left`` and ``right`` (never a method name or a path).
    """
    _join(con, participant)
    total, answered = con.execute("SELECT count(*), count(choice) FROM trials WHERE participant = ?",
                                  (participant,)).fetchone()
    row = con.execute("SELECT t.token, t.left_method, t.right_method, p.item, i.token AS masked FROM trials t "
                      "JOIN pairs p ON p.id = t.pair JOIN items it ON it.id = p.item JOIN images i ON i.id = it.masked "
                      "WHERE t.participant = ? AND t.choice IS NULL ORDER BY t.position LIMIT 1",
                      (participant,)).fetchone()
    if row is None:
        return {"done": True, "answered": answered, "total": total, "trial": None}
    with _write(con):
        con.execute("UPDATE trials SET served = ? WHERE token = ? AND choice IS NULL",
                    (time.time() if now is None else now, row["token"]))
    trial = {"token": row["token"], "masked": row["masked"], "left": _fill_token(con, row["item"], row["left_method"]),
             "right": _fill_token(con, row["item"], row["right_method"])}
    return {"done": False, "answered": answered, "total": total, "trial": trial}


@dataclass(frozen=True)
class Vote:
    recorded: bool          # False: this trial had a vote already, the submit was ignored
    rt_ms: float | None     # the response time kept
    rt_source: str          # "client", "server" or "" (not recorded)


def record_vote(con: sqlite3.Connection, participant: str, token: str, side: str,
                rt_client_ms: float | None = None, now: float | None = None) -> Vote:
    """Record ``participant``'s choice (``"left"`` or ``"right"``) on trial ``token``, once.

    Raises :class:`StudyError` for an unknown trial or side, :class:`StudyConflict` for a trial that is not the
    participant's current (served, first unanswered) one. A second vote on an answered trial returns
    ``Vote(recorded=False)`` and changes nothing.
    """
    if side not in ("left", "right"):
        raise StudyError(f"side must be 'left' or 'right', got {side!r}")
    if not isinstance(token, str) or not TOKEN_RE.match(token):
        raise StudyError("malformed trial token")
    now = time.time() if now is None else now
    with _write(con):
        row = con.execute("SELECT * FROM trials WHERE token = ? AND participant = ?", (token, participant)).fetchone()
        if row is None:
            raise StudyError("no such trial for this participant")
        if row["choice"] is not None:
            return Vote(False, None, "")
        current = con.execute("SELECT min(position) FROM trials WHERE participant = ? AND choice IS NULL",
                              (participant,)).fetchone()[0]
        if row["position"] != current or row["served"] is None:
            raise StudyConflict("this trial is not the participant's current one; ask for the next trial")
        rt_server = max(0.0, (now - row["served"]) * 1000.0)
        client_ok = (isinstance(rt_client_ms, (int, float)) and not isinstance(rt_client_ms, bool)
                     and 0 < rt_client_ms <= rt_server + RT_TOLERANCE_MS)
        rt, source = (float(rt_client_ms), "client") if client_ok else (rt_server, "server")
        chosen = row["left_method"] if side == "left" else row["right_method"]
        cur = con.execute("UPDATE trials SET choice = ?, side = ?, rt_ms = ?, rt_client_ms = ?, rt_server_ms = ?, "
                          "voted = ? WHERE token = ? AND choice IS NULL",
                          (chosen, side, rt, rt_client_ms if client_ok else None, rt_server, now, token))
        if cur.rowcount != 1:
            return Vote(False, None, "")
    return Vote(True, rt, source)


def image_png(con: sqlite3.Connection, token: str) -> bytes | None:
    """The PNG bytes of the image with this opaque token, or None."""
    if not isinstance(token, str) or not TOKEN_RE.match(token):
        return None
    row = con.execute("SELECT png FROM images WHERE token = ?", (token,)).fetchone()
    return None if row is None else bytes(row[0])
