"""A bounded load test of ``repaint serve`` on 127.0.0.1: hostile requests mixed with normal ones (issue 25).

The server runs as its own process (the bundled model, CPU). For ``--seconds`` one client thread sends normal requests
(a 64x64 face, a 4-call schedule) one after another while others send the hostile kinds in turn: a schedule of a
billion resamplings, a chunked upload larger than the limit, an undecodable image, a decompression bomb, a field of
the wrong type, steps beyond the model's noise levels, and clients that start a long run and hang up. The server's
resident memory is read from /proc every half second. Written: ``--out`` (JSON) with every status count, the normal
requests' latencies and the memory over time.

    python benchmarks/hostile_load.py --seconds 120
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter, defaultdict
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
FACE = (ROOT / "examples" / "face.png").read_bytes()
MASK = (ROOT / "examples" / "face_mask.png").read_bytes()
SHORT = {"schedule": "custom", "steps": "4", "jump_length": "1", "jump_n_sample": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _bomb() -> bytes:
    """A PNG whose header claims 20000 x 20000 pixels (refused before decoding)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    head = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def _post(url, files=None, data=None, timeout=120.0):
    files = files or {"image": ("face.png", FACE, "image/png"), "mask": ("mask.png", MASK, "image/png")}
    return httpx.post(f"{url}/api/inpaint", files=files, data=data or {}, timeout=timeout)


def _chunked_upload(url: str, megabytes: int) -> int:
    """A multipart body sent with chunked transfer encoding (no Content-Length), larger than the upload limit."""
    boundary = "hostileboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()

    def body():
        yield head
        block = bytes(1 << 20)
        for _ in range(megabytes):
            yield block
        yield f"\r\n--{boundary}--\r\n".encode()

    try:
        response = httpx.post(f"{url}/api/inpaint", content=body(), timeout=120,
                              headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        return response.status_code
    except httpx.HTTPError:
        return -1  # the server closed the connection on the body: also a refusal


def _hang_up(url: str) -> int:
    """Start a long run (hundreds of calls) and disconnect after half a second."""
    try:
        _post(url, data={"schedule": "custom", "steps": "200", "jump_length": "10", "jump_n_sample": "5"},
              timeout=0.5)
    except httpx.TimeoutException:
        return 0
    return -2


HOSTILE = {
    "billion resamplings": lambda url: _post(url, data={**SHORT, "jump_n_sample": "1000000000"}).status_code,
    "chunked 64 MB upload": lambda url: _chunked_upload(url, 64),
    "undecodable image": lambda url: _post(url, files={"image": ("x.png", b"\x89PNG garbage", "image/png"),
                                                       "mask": ("m.png", MASK, "image/png")}).status_code,
    "decompression bomb": lambda url: _post(url, files={"image": ("b.png", _bomb(), "image/png"),
                                                        "mask": ("m.png", MASK, "image/png")}).status_code,
    "n_samples=abc": lambda url: _post(url, data={**SHORT, "n_samples": "abc"}).status_code,
    "steps=100000": lambda url: _post(url, data={**SHORT, "steps": "100000"}).status_code,
    "client hangs up mid-run": _hang_up,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--hostile-clients", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "hostile_load.json")
    args = parser.parse_args()

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    server = subprocess.Popen([sys.executable, "-m", "repaint", "serve", "--port", str(port), "--device", "cpu",
                               "--max-queue", "2", "--max-upload-mb", "8"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the server did not start")
            time.sleep(0.5)
        _post(url, data=SHORT)  # the model loads on first use: not part of the measurement

        stop = time.monotonic() + args.seconds
        statuses: dict[str, Counter] = defaultdict(Counter)
        normal_latency: list[float] = []
        memory: list[tuple[float, float]] = []
        lock = threading.Lock()
        t0 = time.monotonic()

        def normal():
            while time.monotonic() < stop:
                start = time.monotonic()
                try:
                    code = _post(url, data=SHORT).status_code
                except httpx.HTTPError:
                    code = -1
                with lock:
                    statuses["normal"][code] += 1
                    if code == 200:
                        normal_latency.append(time.monotonic() - start)

        def hostile(offset: int):
            kinds = list(HOSTILE)
            i = offset
            while time.monotonic() < stop:
                kind = kinds[i % len(kinds)]
                i += 1
                try:
                    code = HOSTILE[kind](url)
                except httpx.HTTPError as err:
                    code = type(err).__name__
                with lock:
                    statuses[kind][code] += 1

        def watch():
            while time.monotonic() < stop + 5:
                memory.append((round(time.monotonic() - t0, 1), round(_rss_mib(server.pid), 1)))
                time.sleep(0.5)

        threads = [threading.Thread(target=normal), threading.Thread(target=watch)]
        threads += [threading.Thread(target=hostile, args=(k * 3,)) for k in range(args.hostile_clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        alive = httpx.get(f"{url}/api/health", timeout=10).status_code == 200
    finally:
        server.terminate()
        try:
            _, stderr = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            _, stderr = server.communicate()
    rss = [m for _, m in memory]
    tenth = max(1, len(rss) // 10)
    result = {
        "seconds": args.seconds, "hostile_clients": args.hostile_clients,
        "statuses": {kind: {str(k): v for k, v in counts.items()} for kind, counts in statuses.items()},
        "normal_ok": len(normal_latency),
        "normal_latency_s": {"median": round(statistics.median(normal_latency), 2),
                             "max": round(max(normal_latency), 2)} if normal_latency else None,
        "rss_mib": {"first_tenth_max": max(rss[:tenth]), "last_tenth_max": max(rss[-tenth:]), "max": max(rss),
                    "min": min(rss)},
        "alive_after": alive, "server_exit": server.returncode,
        "tracebacks_in_server_log": stderr.count("Traceback"), "load_average": os.getloadavg(),
        "memory_trace": memory, "command": f"python benchmarks/hostile_load.py --seconds {args.seconds:g}",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "memory_trace"}, indent=1))


if __name__ == "__main__":
    main()
