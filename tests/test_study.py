"""The 2AFC study: statistics on synthetic votes with known answers, vote rules, concurrency, bad folders, CLI, HTTP."""

from __future__ import annotations

import math
import shutil
import sqlite3
import threading

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from study_helpers import running_server, side_of, vote_all, write_results

from repaint.study.cli import study as study_cli
from repaint.study.report import (
    ALL,
    build_report,
    cluster_bootstrap,
    report_csv,
    report_markdown,
    wilson_interval,
    write_report,
)
from repaint.study.store import StudyConflict, StudyError, connect, create_study, image_png, next_trial, record_vote

NAMES20 = tuple(f"img{i:02d}" for i in range(20))


@pytest.fixture
def two(tmp_path):
    return write_results(tmp_path / "res", ["ours", "base"])


# ---------------------------------------------------------------------------------------------------------------
# Statistics with known answers
# ---------------------------------------------------------------------------------------------------------------

def test_seventy_thirty_preference_is_recovered_with_a_clustered_interval(tmp_path):
    """30 participants, each preferring "ours" with their own probability p_i ~ Beta(7, 3) (mean 0.70, sd 0.14),
    40 pairs each, voting through the store: the 95 % interval covers 0.70 and is wider than the binomial one."""
    folders = write_results(tmp_path / "res", ["ours", "base"], names=NAMES20)
    db = tmp_path / "s.db"
    create_study(db, [folders["ours"], folders["base"]], per_participant=40, repeat_share=0.1, seed=1)
    con = connect(db)
    g = torch.Generator().manual_seed(7)
    prefs = _beta(7.0, 3.0, 30, g)
    for i, p in enumerate(prefs.tolist()):
        vote_all(con, f"p{i:02d}", "ours", p, g)
    report = build_report(con, n_boot=2000, seed=0)
    ours, base = report.cell("ours"), report.cell("base")
    assert ours.votes == 30 * 40 and ours.participants == 30            # repeats are not counted twice
    assert ours.low < 0.70 < ours.high
    assert 0.6 < ours.share < 0.8
    assert base.share == pytest.approx(1 - ours.share)
    assert (ours.high - ours.low) > 1.3 * (ours.wilson_high - ours.wilson_low)
    for setting in ("wide", "narrow"):
        cell = report.cell("ours", setting)
        assert cell.low < cell.share < cell.high and cell.votes < ours.votes


def _beta(a: float, b: float, n: int, g: torch.Generator) -> torch.Tensor:
    """Beta(a, b) draws through a torch.Generator (torch.distributions has no generator argument): X/(X+Y) of
    Gamma draws, Gamma(k) for integer k as a sum of k exponentials."""
    e = -torch.log(torch.rand(n, int(a + b), generator=g, dtype=torch.float64))
    x, y = e[:, : int(a)].sum(1), e[:, int(a):].sum(1)
    return x / (x + y)


def test_cluster_bootstrap_coverage_and_width():
    """Over 200 simulated studies with a true share of 0.70 the 95 % interval covers it 90-99 % of the time; without
    participant differences it is about as wide as the binomial interval, with them clearly wider."""
    g = torch.Generator().manual_seed(3)
    covered, ratio_het, ratio_hom = 0, [], []
    for _ in range(200):
        p = _beta(7.0, 3.0, 25, g)
        wins = torch.binomial(torch.full((25,), 30.0, dtype=torch.float64), p, generator=g)
        _, low, high = cluster_bootstrap(wins.numpy(), np.full(25, 30), 500, g)
        covered += low <= 0.70 <= high
        wl, wh = wilson_interval(int(wins.sum()), 750)
        ratio_het.append((high - low) / (wh - wl))
        hom = torch.binomial(torch.full((25,), 30.0, dtype=torch.float64), torch.full((25,), 0.7, dtype=torch.float64),
                             generator=g)
        _, low, high = cluster_bootstrap(hom.numpy(), np.full(25, 30), 500, g)
        wl, wh = wilson_interval(int(hom.sum()), 750)
        ratio_hom.append((high - low) / (wh - wl))
    assert 0.90 <= covered / 200 <= 0.99
    assert 0.85 < float(np.median(ratio_hom)) < 1.1
    assert float(np.median(ratio_het)) > 1.5


def test_cluster_bootstrap_is_seeded_and_checks_its_input():
    wins, votes = [3, 5, 9, 2], [10, 10, 12, 5]
    a = cluster_bootstrap(wins, votes, 300, torch.Generator().manual_seed(0))
    b = cluster_bootstrap(wins, votes, 300, torch.Generator().manual_seed(0))
    assert a == b and a[0] == pytest.approx(19 / 37)
    assert math.isnan(cluster_bootstrap([3], [4])[1])
    with pytest.raises(ValueError):
        cluster_bootstrap([1, 2], [3, 0])


def test_self_consistency_flags_a_side_clicker_and_can_exclude_them(tmp_path, two):
    db = tmp_path / "s.db"
    create_study(db, [two["ours"], two["base"]], repeat_share=1.0, seed=0)     # every pair shown twice
    con = connect(db)
    g = torch.Generator().manual_seed(0)
    vote_all(con, "careful", "ours", 1.0, g)     # always the same method: agrees on every repeat
    vote_all(con, "lefty", "ours", 0.0, g, always="left")   # always the left side: never agrees (sides swapped)
    report = build_report(con, n_boot=200)
    people = {p.participant: p for p in report.participants}
    assert people["careful"].repeats == 6 and people["careful"].consistency == 1 and not people["careful"].flagged
    assert people["lefty"].consistency == 0 and people["lefty"].flagged and people["lefty"].left_share == 1
    assert people["lefty"].p_chance == pytest.approx(1 / 64)
    assert not build_report(con, n_boot=200, flag_alpha=0.01).participants[1].flagged      # 1/64 > 0.01
    kept = build_report(con, n_boot=200, exclude_flagged=True)
    assert kept.excluded == ["lefty"] and kept.cell("ours").share == 1.0 and kept.cell("ours").votes == 6
    assert "below chance (excluded)" in report_markdown(kept)


def test_few_disagreements_are_not_flagged(tmp_path, two):
    """Two repeats answered differently (0/2, p = 0.25) happen by chance to an indifferent participant: no flag."""
    db = tmp_path / "s.db"
    create_study(db, [two["ours"], two["base"]], repeat_share=0.34, seed=0)        # 2 repeats
    con = connect(db)
    vote_all(con, "lefty", "ours", 0.0, torch.Generator(), always="left")
    (lefty,) = build_report(con, n_boot=200).participants
    assert (lefty.repeats, lefty.consistency, lefty.p_chance, lefty.flagged) == (2, 0.0, 0.25, False)


# ---------------------------------------------------------------------------------------------------------------
# Pairs, trials and votes
# ---------------------------------------------------------------------------------------------------------------

def test_pairs_are_balanced_over_participants_and_sequences_are_seeded(tmp_path):
    folders = write_results(tmp_path / "res", ["x", "y", "z"], settings=("wide",), names=("a", "b", "c", "d"))
    for run in ("1", "2"):
        create_study(tmp_path / f"{run}.db", [folders[m] for m in "xyz"], per_participant=3, repeat_share=0.34,
                     seed=5)
    cons = [connect(tmp_path / f"{run}.db") for run in ("1", "2")]
    for con in cons:
        for pid in ("p0", "p1", "p2", "p3"):
            next_trial(con, pid)
    seq = "SELECT pair, left_method, right_method, repeat_of FROM trials ORDER BY participant, position"
    assert [tuple(r) for r in cons[0].execute(seq)] == [tuple(r) for r in cons[1].execute(seq)]
    con = cons[0]
    firsts = [r[0] for r in con.execute("SELECT pair FROM trials WHERE repeat_of IS NULL")]
    assert sorted(firsts) == list(range(1, 13))            # 4 images x 3 method pairs, each seen exactly once
    for pid in ("p0", "p1", "p2", "p3"):
        rows = con.execute("SELECT position, pair, left_method, right_method, repeat_of FROM trials "
                           "WHERE participant = ? ORDER BY position", (pid,)).fetchall()
        assert len(rows) == 4                                 # 3 pairs + round(0.34 * 3) = 1 repeat
        (rep,) = [r for r in rows if r["repeat_of"] is not None]
        first = rows[rep["repeat_of"]]
        assert first["pair"] == rep["pair"] and rep["position"] > first["position"]
        # one other trial in between, unless the first showing was the last of the original sequence
        assert rep["position"] > first["position"] + 1 or first["position"] == len(rows) - 2
        assert (rep["left_method"], rep["right_method"]) == (first["right_method"], first["left_method"])
    sides = [r[0] for r in con.execute("SELECT left_method FROM trials WHERE repeat_of IS NULL")]
    assert len(set(sides)) > 1


def test_votes_are_unique_ordered_and_resumable(tmp_path, two):
    db = tmp_path / "s.db"
    create_study(db, [two["ours"], two["base"]], repeat_share=0.0)
    con = connect(db)
    first = next_trial(con, "anna")
    assert first["total"] == 6 and first["answered"] == 0
    token = first["trial"]["token"]
    assert set(first["trial"]) == {"token", "masked", "left", "right"}
    assert record_vote(con, "anna", token, "left", 40.0).recorded
    assert not record_vote(con, "anna", token, "right", 40.0).recorded          # second submit ignored
    assert con.execute("SELECT count(choice) FROM trials").fetchone()[0] == 1
    assert con.execute("SELECT side FROM trials WHERE token = ?", (token,)).fetchone()[0] == "left"
    with pytest.raises(StudyError):
        record_vote(con, "bob", token, "left")                                    # another participant's trial
    with pytest.raises(StudyError):
        record_vote(con, "anna", token, "middle")
    later = con.execute("SELECT token FROM trials WHERE participant = 'anna' AND position = 3").fetchone()[0]
    with pytest.raises(StudyConflict):
        record_vote(con, "anna", later, "left")                                   # not the current trial
    con.close()
    again = connect(db)                                                           # the participant comes back
    resumed = next_trial(again, "anna")
    assert resumed["answered"] == 1
    assert resumed["trial"]["token"] == again.execute(
        "SELECT token FROM trials WHERE participant = 'anna' AND position = 1").fetchone()[0]
    with pytest.raises(StudyError):
        next_trial(again, "../etc/passwd")


def test_response_time_from_the_client_is_checked_against_the_server(tmp_path, two):
    db = tmp_path / "s.db"
    create_study(db, [two["ours"], two["base"]], repeat_share=0.0)
    con = connect(db)
    t = next_trial(con, "p", now=1000.0)["trial"]["token"]
    vote = record_vote(con, "p", t, "left", rt_client_ms=1200.0, now=1001.5)          # 1.2 s of 1.5 s: kept
    assert (vote.rt_ms, vote.rt_source) == (1200.0, "client")
    t = next_trial(con, "p", now=2000.0)["trial"]["token"]
    vote = record_vote(con, "p", t, "left", rt_client_ms=9000.0, now=2002.0)          # longer than possible
    assert (vote.rt_ms, vote.rt_source) == (pytest.approx(2000.0), "server")
    t = next_trial(con, "p", now=3000.0)["trial"]["token"]
    assert record_vote(con, "p", t, "left", rt_client_ms=None, now=3000.25).rt_source == "server"


def test_concurrent_participants_and_double_submits(tmp_path):
    """8 threads with their own connections: 6 participants vote through their trials at once while two threads
    race to submit the same trial of a seventh; every vote is stored once, none is lost."""
    folders = write_results(tmp_path / "res", ["ours", "base"], names=NAMES20[:10])
    db = tmp_path / "s.db"
    create_study(db, [folders["ours"], folders["base"]], repeat_share=0.1, seed=2)
    errors, recorded = [], []
    token = next_trial(connect(db), "racer")["trial"]["token"]
    barrier = threading.Barrier(8)

    def voter(pid):
        try:
            con = connect(db)
            barrier.wait()
            vote_all(con, pid, "ours", 0.7, torch.Generator().manual_seed(len(pid)))
        except Exception as err:  # noqa: BLE001  (reported below)
            errors.append(err)

    def racer():
        try:
            con = connect(db)
            barrier.wait()
            recorded.append(record_vote(con, "racer", token, "right", 30.0).recorded)
        except Exception as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=voter, args=(f"p{i}",)) for i in range(6)]
    threads += [threading.Thread(target=racer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sorted(recorded) == [False, True]
    con = connect(db)
    assert con.execute("SELECT count(choice) FROM trials WHERE participant = 'racer'").fetchone()[0] == 1
    assert tuple(con.execute("SELECT count(*), count(choice) FROM trials WHERE participant <> 'racer'").fetchone()) == (
        6 * 22, 6 * 22)                                     # 20 pairs + 2 repeats each, all answered
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# ---------------------------------------------------------------------------------------------------------------
# Bad folders and the command line
# ---------------------------------------------------------------------------------------------------------------

def _create(args):
    return CliRunner().invoke(study_cli, ["create", *map(str, args)])


def _one_line_error(result, *words):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("repaint: error: "), result.output
    for word in words:
        assert word in lines[0]


@pytest.mark.parametrize("damage, words", [
    ("missing", ["do not line up", "missing", "narrow/b"]),
    ("extra", ["do not line up", "extra", "wide/zz"]),
    ("size", ["different sizes", "8x8", "9x9"]),
    ("masked", ["different masked input", "wide/c"]),
    ("corrupt", ["cannot read image"]),
])
def test_bad_folders_are_one_clear_error_and_write_nothing(tmp_path, two, damage, words):
    base = two["base"]
    if damage == "missing":
        (base / "narrow" / "inpainted" / "b_s0.png").unlink()
    elif damage == "extra":
        shutil.copy(base / "wide" / "inpainted" / "a_s0.png", base / "wide" / "inpainted" / "zz_s0.png")
    elif damage == "size":
        Image.new("RGB", (9, 9)).save(base / "wide" / "inpainted" / "a_s0.png")
    elif damage == "masked":
        Image.new("RGB", (8, 8), (1, 2, 3)).save(base / "wide" / "gt_masked" / "c.png")
    elif damage == "corrupt":
        (base / "wide" / "inpainted" / "a_s0.png").write_bytes(b"not a png")
    result = _create([tmp_path / "s.db", two["ours"], base])
    _one_line_error(result, *words)
    assert list(tmp_path.glob("*.db*")) == [] and list(tmp_path.glob(".s.db*")) == []


def test_other_bad_input(tmp_path, two):
    _one_line_error(_create([tmp_path / "s.db", two["ours"]]), "two or more")
    _one_line_error(_create([tmp_path / "s.db", two["ours"], tmp_path / "nowhere"]), "does not exist")
    (tmp_path / "empty").mkdir()
    _one_line_error(_create([tmp_path / "s.db", two["ours"], tmp_path / "empty"]), "no PNG")
    _one_line_error(_create([tmp_path / "s.db", two["ours"], two["base"], "--reference", "x"]), "reference")
    _one_line_error(_create([tmp_path / "s.db", two["ours"], f"ours={two['base']}"]), "share a method name")
    (tmp_path / "junk.db").write_text("hello")
    _one_line_error(CliRunner().invoke(study_cli, ["report", str(tmp_path / "junk.db")]), "not a study file")
    _one_line_error(CliRunner().invoke(study_cli, ["serve", str(tmp_path / "none.db")]), "does not exist")


def test_plain_folders_need_and_take_masked_inputs(tmp_path, two):
    plain = {}
    for m in ("ours", "base"):
        plain[m] = tmp_path / f"plain_{m}"
        plain[m].mkdir()
        for f in (two[m] / "wide" / "inpainted").glob("*.png"):
            shutil.copy(f, plain[m] / f.name.replace("_s0", ""))
    _one_line_error(_create([tmp_path / "s.db", plain["ours"], plain["base"]]), "no masked input", "--masked")
    result = _create([tmp_path / "s.db", f"A={plain['ours']}", f"B={plain['base']}", "--masked",
                      two["ours"] / "wide" / "gt_masked"])
    assert result.exit_code == 0, result.output
    con = connect(tmp_path / "s.db")
    assert [r[0] for r in con.execute("SELECT name FROM methods ORDER BY id")] == ["A", "B"]
    masked = con.execute("SELECT i.token FROM items it JOIN images i ON i.id = it.masked WHERE it.name = 'a'")
    assert image_png(con, masked.fetchone()[0]) == (two["ours"] / "wide" / "gt_masked" / "a.png").read_bytes()


def test_cli_report_writes_the_paper_layout(tmp_path, two):
    db = tmp_path / "s.db"
    result = _create([db, two["ours"], two["base"], "--reference", "ours", "--repeat-share", "0"])
    assert result.exit_code == 0 and "2 methods" in result.output
    con = connect(db)
    g = torch.Generator().manual_seed(0)
    vote_all(con, "p1", "ours", 1.0, g)
    vote_all(con, "p2", "base", 1.0, g)
    vote_all(con, "p3", "ours", 1.0, g)
    result = CliRunner().invoke(study_cli, ["report", str(db), "--out", str(tmp_path / "rep"), "--n-boot", "300"])
    assert result.exit_code == 0, result.output
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| ours | reference | reference | reference |" in md
    assert "| base | 33.3 [" in md and "(n=18) |" in md                   # 6 of 18 votes went to base
    header, *rows = (tmp_path / "rep" / "report.csv").read_text().splitlines()
    assert header.startswith("method,opponent,setting,share,ci_low,ci_high,wins,votes,participants")
    (row,) = [r.split(",") for r in rows if r.startswith("base,ours,all,")]
    assert row[3] == "0.333333" and row[6:9] == ["6", "18", "3"]
    assert row[4] in ("0", "0.333333") and row[5] in ("0.666667", "1")    # 3 clusters: bootstrap shares are k/3
    assert (tmp_path / "rep" / "report.png").stat().st_size > 1000
    assert "--per-participant" in CliRunner().invoke(study_cli, ["create", "--help"]).output
    assert "[default: 127.0.0.1]" in CliRunner().invoke(study_cli, ["serve", "--help"]).output


def test_report_with_three_methods_has_pairwise_shares(tmp_path):
    folders = write_results(tmp_path / "res", ["x", "y", "z"], settings=("half",))
    db = tmp_path / "s.db"
    create_study(db, [folders[m] for m in "xyz"], repeat_share=0)
    con = connect(db)
    for pid in ("p1", "p2"):
        while not (s := next_trial(con, pid))["done"]:      # x beats everyone, y beats z
            tok = s["trial"]["token"]
            best = "x" if "x" in _methods(con, tok) else "y"
            record_vote(con, pid, tok, side_of(con, tok, best), 10.0)
    report = build_report(con, n_boot=200)
    assert report.cell("x").share == 1 and report.cell("z").share == 0 and report.cell("y").share == 0.5
    assert report.cell("y", ALL, "z").share == 1 and report.cell("z", ALL, "x").votes == 6
    assert "## Pairwise" in report_markdown(report)
    assert report_csv(report).count("\n") == len(report.cells) + 1
    write_report(report, tmp_path / "out", plot=False)
    assert not (tmp_path / "out" / "report.png").exists()


def _methods(con: sqlite3.Connection, token: str) -> set[str]:
    row = con.execute("SELECT ml.name, mr.name FROM trials t JOIN methods ml ON ml.id = t.left_method "
                      "JOIN methods mr ON mr.id = t.right_method WHERE t.token = ?", (token,)).fetchone()
    return set(row)


# ---------------------------------------------------------------------------------------------------------------
# HTTP (FastAPI's test client; the browser test drives the real server)
# ---------------------------------------------------------------------------------------------------------------

def test_http_api_serves_tokens_not_paths(tmp_path, two):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from repaint.study.server import make_app

    db = tmp_path / "s.db"
    create_study(db, [two["ours"], two["base"]], repeat_share=0.0)
    client = TestClient(make_app(db))
    page = client.get("/")
    assert page.status_code == 200 and "Which image looks more realistic?" in page.text
    state = client.post("/api/next", json={"participant": "web1"}).json()
    trial = state["trial"]
    for key in ("masked", "left", "right"):
        img = client.get(f"/img/{trial[key]}")
        assert img.status_code == 200 and img.headers["content-type"] == "image/png"
    assert "ours" not in str(state) and "base" not in str(state) and str(tmp_path) not in str(state)
    for bad in ("../../etc/passwd", "%2e%2e%2fs.db", "0" * 32, str(db)):
        assert client.get(f"/img/{bad}").status_code == 404
    vote = client.post("/api/vote", json={"participant": "web1", "token": trial["token"], "side": "right",
                                          "rt_ms": 1.0}).json()
    assert vote["recorded"] and vote["next"]["answered"] == 1
    again = client.post("/api/vote", json={"participant": "web1", "token": trial["token"], "side": "left",
                                           "rt_ms": 1.0})
    assert again.status_code == 200 and again.json()["recorded"] is False
    assert client.post("/api/vote", json={"participant": "web1", "token": "f" * 32, "side": "left"}).status_code == 400
    assert client.post("/api/next", json={"participant": "a b"}).status_code == 400
    assert connect(db).execute("SELECT count(choice) FROM trials").fetchone()[0] == 1


def test_participants_voting_at_once_over_http(tmp_path):
    """6 participants vote through the real server (uvicorn on 127.0.0.1) at once, each submitting every vote twice:
    every first submit is recorded, every second one ignored, nothing lost or counted twice."""
    pytest.importorskip("uvicorn")
    httpx = pytest.importorskip("httpx")
    folders = write_results(tmp_path / "res", ["ours", "base"], settings=("wide",), names=NAMES20[:10])
    db = tmp_path / "s.db"
    create_study(db, [folders["ours"], folders["base"]], repeat_share=0.2, seed=4)
    answers, errors = {}, []

    def participant(pid, url, barrier):
        try:
            with httpx.Client(base_url=url, timeout=30) as client:
                barrier.wait()
                state = client.post("/api/next", json={"participant": pid}).json()
                seen = []
                while not state["done"]:
                    body = {"participant": pid, "token": state["trial"]["token"], "side": "left", "rt_ms": 5.0}
                    first = client.post("/api/vote", json=body).json()
                    second = client.post("/api/vote", json=body).json()
                    seen.append((first["recorded"], second["recorded"]))
                    state = second["next"]
                answers[pid] = seen
        except Exception as err:  # noqa: BLE001  (reported below)
            errors.append(err)

    with running_server(db) as url:
        barrier = threading.Barrier(6)
        threads = [threading.Thread(target=participant, args=(f"h{i}", url, barrier)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert not errors
    assert sorted(answers) == [f"h{i}" for i in range(6)]
    assert all(seen == [(True, False)] * 12 for seen in answers.values())     # 10 pairs + 2 repeats
    con = connect(db)
    assert tuple(con.execute("SELECT count(*), count(choice) FROM trials").fetchone()) == (72, 72)
    assert con.execute("SELECT count(*) FROM trials WHERE side <> 'left'").fetchone()[0] == 0


def test_votes_need_the_key_issued_at_enrolment(tmp_path, two):
    """The participant id is not a credential: another client naming it can neither vote nor take it over."""
    from fastapi.testclient import TestClient

    from repaint.study.server import make_app

    db = tmp_path / "s.db"
    create_study(db, [two["ours"], two["base"]], repeat_share=0.0)
    app = make_app(db)
    owner, intruder = TestClient(app), TestClient(app)
    trial = owner.post("/api/next", json={"participant": "p1"}).json()["trial"]
    key = owner.cookies.get("repaint_study_key")
    assert key and len(key) >= 40 and "p1" not in key
    body = {"participant": "p1", "token": trial["token"], "side": "left", "rt_ms": 1.0}
    refused = intruder.post("/api/vote", json=body)
    assert refused.status_code == 403 and set(refused.json()) == {"error"}
    assert intruder.post("/api/next", json={"participant": "p1"}).status_code == 403    # no take-over either
    intruder.cookies.set("repaint_study_key", "x" * 43, path="/api")
    assert intruder.post("/api/vote", json=body).status_code == 403                      # nor a guessed key
    assert connect(db).execute("SELECT count(choice) FROM trials").fetchone()[0] == 0
    assert owner.post("/api/vote", json=body).json()["recorded"]
    assert owner.post("/api/next", json={"participant": "p1"}).json()["answered"] == 1   # the owner goes on


def test_enrolment_is_rate_limited_per_client(tmp_path, two):
    from fastapi.testclient import TestClient

    from repaint.study.server import make_app

    db = tmp_path / "s.db"
    create_study(db, [two["ours"], two["base"]], repeat_share=0.0)
    client = TestClient(make_app(db, enrol_limit=3, enrol_window=60))
    for i in range(3):
        assert client.post("/api/next", json={"participant": f"bot{i}"}).status_code == 200
    refused = client.post("/api/next", json={"participant": "bot3"})
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
    assert "too many" in refused.json()["error"]
    assert connect(db).execute("SELECT count(*) FROM participants").fetchone()[0] == 3
    assert client.post("/api/next", json={"participant": "bot2"}).status_code == 200   # enrolled ones go on


def test_study_errors_are_400_with_one_line_and_no_echo(tmp_path, two):
    from fastapi.testclient import TestClient

    from repaint.study.server import make_app

    db = tmp_path / "s.db"
    create_study(db, [two["ours"], two["base"]], repeat_share=0.0)
    client = TestClient(make_app(db))
    for body, words in (({}, "participant is missing"), ({"participant": "<script>" * 20}, "participant must be"),
                        ({"participant": 5}, "participant must be text")):
        response = client.post("/api/next", json=body)
        assert response.status_code == 400 and set(response.json()) == {"error"}, response.text
        assert words in response.json()["error"] and "<script>" not in response.text
    response = client.post("/api/next", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]
    assert client.post("/api/vote", json={"participant": "p"}).json() == {"error": "token is missing; side is missing"}
    assert client.get("/img/" + "0" * 32).json() == {"error": "no such image"}
