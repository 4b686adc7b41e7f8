"""Load on the study server: participants voting at once against ``repaint study serve`` on 127.0.0.1.

A synthetic study (two methods, ``--images`` 64x64 images, every pair per participant, 10 % repeats) is served by
uvicorn in this process; ``--participants`` threads each vote through all their trials as fast as the server answers
(one POST /api/vote per trial, which records the vote and returns the next trial; the three images of each trial are
fetched too, as a browser would). Reported per participant count: votes per second, the median and 95th percentile of
the vote request's latency, and a check that every vote is in the study file exactly once.

    python benchmarks/study_load.py --participants 1 8 32 --images 20 --out benchmarks/results/study_load.json

Only 127.0.0.1 is ever contacted, and the run is bounded by participants x trials requests.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def run(n_participants: int, n_images: int, tmp: Path) -> dict:
    import httpx
    from study_helpers import running_server, write_results

    from repaint.study.store import connect, create_study

    folders = write_results(tmp / f"res{n_participants}", ["a", "b"], settings=("wide",),
                            names=tuple(f"i{k:03d}" for k in range(n_images)), size=64)
    db = tmp / f"load{n_participants}.db"
    create_study(db, [folders["a"], folders["b"]], repeat_share=0.1, seed=0)
    latencies: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(n_participants + 1)

    def participant(pid: str, url: str) -> None:
        mine = []
        with httpx.Client(base_url=url, timeout=60) as client:
            barrier.wait()
            state = client.post("/api/next", json={"participant": pid}).json()
            while not state["done"]:
                trial = state["trial"]
                for key in ("masked", "left", "right"):
                    client.get(f"/img/{trial[key]}").raise_for_status()
                start = time.perf_counter()
                res = client.post("/api/vote", json={"participant": pid, "token": trial["token"], "side": "left",
                                                     "rt_ms": 1.0})
                mine.append(time.perf_counter() - start)
                res.raise_for_status()
                state = res.json()["next"]
        with lock:
            latencies.extend(mine)

    with running_server(db, enrol_limit=10**6) as url:   # every simulated participant comes from 127.0.0.1
        threads = [threading.Thread(target=participant, args=(f"p{i}", url)) for i in range(n_participants)]
        for t in threads:
            t.start()
        barrier.wait()
        start = time.perf_counter()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
    con = connect(db)
    total, answered = con.execute("SELECT count(*), count(choice) FROM trials").fetchone()
    latencies.sort()
    return {"participants": n_participants, "votes": len(latencies), "stored_votes": answered, "trials": total,
            "all_votes_stored_once": answered == total == len(latencies), "wall_s": round(wall, 3),
            "votes_per_s": round(len(latencies) / wall, 1),
            "vote_latency_ms_p50": round(1000 * statistics.median(latencies), 2),
            "vote_latency_ms_p95": round(1000 * latencies[int(0.95 * (len(latencies) - 1))], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run(n, args.images, Path(tmp)) for n in args.participants]
    result = {"command": " ".join(["python", "benchmarks/study_load.py", *sys.argv[1:]]),
              "machine": f"{platform.machine()}, {platform.python_version()}, shared CPU", "runs": rows}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
