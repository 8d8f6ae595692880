"""Load check of ``sdeflow serve``: N concurrent sample requests of a tiny model (all must be
answered and finish, none lost, in one model queue) while a prober asks ``/api/status`` every
50 ms; the status latency under load over its idle latency says whether the event loop stays
free while the worker samples. Trains a tiny digits U-Net for a few steps unless --run is given.

    python benchmarks/serve_load.py --out docs/serve_load_results.jsonl --markdown
"""
from __future__ import annotations

import socket
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import torch
from common import run_benchmark

TINY_UNET = dict(channels=8, channel_mult=[1, 2], num_res_blocks=1, attn_resolutions=[4], head_dim=8)


def _tiny_run(root: Path) -> Path:
    from sdeflow.train import TrainConfig
    from sdeflow.training import train
    train(TrainConfig(data="digits", model="unet", model_kwargs=TINY_UNET, steps=5, batch_size=8,
                      tensorboard=False), root / "tiny", progress=False)
    return root / "tiny"


def _start(run: Path):
    import uvicorn

    from sdeflow.serve import create_app
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app([run], exact=False), host="127.0.0.1",
                                           port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}"


def _latency(url: str, n: int = 40) -> list[float]:
    out = []
    with httpx.Client() as c:
        for _ in range(n):
            t0 = time.perf_counter()
            c.get(f"{url}/api/status").raise_for_status()
            out.append(time.perf_counter() - t0)
            time.sleep(0.05)
    return out


def _one_request(url: str, body: dict) -> dict:
    """POST, then poll until the job finishes: (HTTP status, final job)."""
    with httpx.Client(timeout=30) as c:
        r = c.post(f"{url}/api/sample", json=body)
        if r.status_code != 202:
            return dict(http=r.status_code, status=None)
        job = r.json()
        while job["status"] not in ("done", "error", "cancelled"):
            time.sleep(0.1)
            job = c.get(f"{url}/api/jobs/{job['id']}").json()
        return dict(http=202, status=job["status"], nfe=(job["result"] or {}).get("nfe"),
                    image=c.get(url + job["images"]["grid"]).status_code if job["images"] else None)


def _probe(url: str, stop: threading.Event, out: list) -> None:
    with httpx.Client() as c:
        while not stop.is_set():
            t0 = time.perf_counter()
            c.get(f"{url}/api/status").raise_for_status()
            out.append(time.perf_counter() - t0)
            time.sleep(0.05)


def _stats(xs: list[float]) -> dict:
    xs = sorted(xs)
    return dict(n=len(xs), median_ms=1e3 * statistics.median(xs),
                p95_ms=1e3 * xs[int(0.95 * (len(xs) - 1))], max_ms=1e3 * xs[-1])


def body(emit, a):
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(a.run) if a.run else _tiny_run(Path(tmp))
        server, url = _start(run)
        idle = _stats(_latency(url))
        emit(dict(case="status, idle", **idle))
        req = dict(run=run.name.lower(), solver="heun", steps=a.steps, n=a.images)
        stop, under_load = threading.Event(), []
        prober = threading.Thread(target=_probe, args=(url, stop, under_load))
        prober.start()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(a.requests) as pool:
            results = list(pool.map(lambda _: _one_request(url, req), range(a.requests)))
        wall = time.perf_counter() - t0
        stop.set()
        prober.join()
        load = _stats(under_load)
        emit(dict(case=f"status, under {a.requests} concurrent samples", **load))
        done = sum(r["status"] == "done" and r["image"] == 200 for r in results)
        emit(dict(case="summary", requests=a.requests, answered=sum(r["http"] == 202 for r in results),
                  completed=done, lost=a.requests - done, wall_s=wall,
                  samples_per_s=a.requests / wall, steps=a.steps, images_per_request=a.images,
                  median_latency_ratio=load["median_ms"] / idle["median_ms"],
                  p95_latency_ratio=load["p95_ms"] / idle["p95_ms"]))
        server.should_exit = True


def markdown(rows) -> str:
    out = ["| case | n | median ms | p95 ms | max ms |", "|---|---:|---:|---:|---:|"]
    out += [f"| {r['case']} | {r['n']} | {r['median_ms']:.1f} | {r['p95_ms']:.1f} | {r['max_ms']:.1f} |"
            for r in rows if "median_ms" in r]
    s = next(r for r in rows if r["case"] == "summary")
    out.append(f"\n{s['requests']} requests: {s['answered']} answered, {s['completed']} completed, "
               f"{s['lost']} lost in {s['wall_s']:.1f} s; status latency under load / idle: "
               f"median ×{s['median_latency_ratio']:.2f}, p95 ×{s['p95_latency_ratio']:.2f}")
    return "\n".join(out)


def extra(ap):
    ap.add_argument("--run", default=None, help="an image run (default: train a tiny one)")
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--steps", type=int, default=20, help="Heun steps per request")
    ap.add_argument("--images", type=int, default=16, help="images per request")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")


if __name__ == "__main__":
    run_benchmark(__doc__, body, markdown, extra)
