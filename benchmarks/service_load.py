"""Load benchmark of `meddx serve` on loopback: N `POST /v1/predict` of PNGs from C concurrent clients (latency
p50/p95/p99, throughput, errors) beside the in-process `predict_batch` throughput of the same RUN (the ceiling),
then a burst over the queue limit (503s expected) and a check that the server still answers.

By default two RUNs are measured one after the other: the 64x64 demo CNN (`tests/fixtures/runs/demo_cls`, ~1-2 ms
per study: HTTP work dominates) and a ResNet-18 on 128x128 PNGs trained here for 2 epochs on synthetic data
(~40 ms per study: the model dominates; its accuracy is irrelevant to throughput). `--run` measures one RUN.

    python benchmarks/service_load.py [--run RUN --size PX] [--requests 500] [--clients 8]

Bounded: loopback only, at most --requests + --burst requests and --max-seconds for the load phase.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TOKEN = "bench-token-" + os.urandom(12).hex()


def pngs(n: int, size: int) -> list[bytes]:
    from PIL import Image as PILImage

    from meddx.data.synthetic import make_synthetic_dataset

    d = make_synthetic_dataset(n=n, size=size, seed=1, dtype="uint8")
    out = []
    for img in d["images"]:
        buf = io.BytesIO()
        PILImage.fromarray(img).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def ceiling(run: str, images: list[bytes], heatmap: bool, batch: int, seconds: float = 15.0) -> float:
    """Studies per second of in-process `predict_batch` (decode included, as the service decodes too)."""
    from meddx.infer import load
    from meddx.io import read_image

    p = load(run)
    kw = {"heatmap": heatmap} if p.kind == "classifier" else {}
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, b in enumerate(images):
            f = Path(tmp) / f"{i}.png"
            f.write_bytes(b)
            files.append(f)
        p.predict_batch([read_image(f) for f in files[:batch]], **kw)  # warm-up
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            chunk = [files[(n + k) % len(files)] for k in range(batch)]
            p.predict_batch([read_image(f) for f in chunk], **kw)
            n += batch
        return n / (time.perf_counter() - t0)


def start_server(run: str, port: int, workers: int, queue: int, results: str) -> subprocess.Popen:
    cmd = [sys.executable, "-c", "import sys; from meddx.cli import main; sys.exit(main())", "serve", run,
           "--port", str(port), "--workers", str(workers), "--queue", str(queue), "--results", results]
    return subprocess.Popen(cmd, env={**os.environ, "MEDDX_TOKEN": TOKEN}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def wait_up(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    import httpx

    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit("meddx serve exited during start-up")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("meddx serve did not start")


def load_phase(url: str, images: list[bytes], n: int, clients: int, params: dict, max_seconds: float,
               raw: bool = False) -> dict:
    import httpx

    lat: list[float] = []
    codes: dict[int, int] = {}
    lock = threading.Lock()
    counter = iter(range(n))
    t_end = time.perf_counter() + max_seconds

    def client() -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120) as c:
            while time.perf_counter() < t_end:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                try:
                    if raw:  # the body is the file itself (no multipart encoding / parsing)
                        code = c.post("/v1/predict", params={**params, "filename": "x.png"},
                                      content=images[i % len(images)]).status_code
                    else:
                        code = c.post("/v1/predict", params=params,
                                      files={"file": ("x.png", images[i % len(images)])}).status_code
                except httpx.HTTPError:
                    code = -1
                dt = time.perf_counter() - t0
                with lock:
                    codes[code] = codes.get(code, 0) + 1
                    if code == 200:
                        lat.append(dt)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as ex:
        for f in [ex.submit(client) for _ in range(clients)]:
            f.result()
    wall = time.perf_counter() - t0
    q = np.percentile(lat, [50, 95, 99]) * 1000 if lat else [float("nan")] * 3
    return {"n": sum(codes.values()), "ok": codes.get(200, 0), "errors": sum(v for k, v in codes.items() if k != 200),
            "codes": codes, "p50_ms": q[0], "p95_ms": q[1], "p99_ms": q[2], "throughput": codes.get(200, 0) / wall,
            "wall_s": wall, "mean_ms": 1000 * statistics.fmean(lat) if lat else float("nan")}


def burst(url: str, image: bytes, n: int, params: dict) -> dict[int, int]:
    import httpx

    async def go() -> list[int]:
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=300,
                                     limits=limits) as c:
            async def one() -> int:
                try:
                    return (await c.post("/v1/predict", params=params, files={"file": ("x.png", image)})).status_code
                except httpx.HTTPError:
                    return -1
            return await asyncio.gather(*[one() for _ in range(n)])

    codes: dict[int, int] = {}
    for c in asyncio.run(go()):
        codes[c] = codes.get(c, 0) + 1
    return codes


def resnet_run(work: Path) -> Path:
    """A ResNet-18 RUN on 128x128 synthetic images (2 epochs through `meddx train`): a model whose inference costs
    more than the HTTP work around it."""
    from meddx.data.synthetic import make_synthetic_dataset

    d = make_synthetic_dataset(n=240, size=128, seed=1, dtype="uint8")
    x, y = d["images"], np.asarray(d["labels"]).reshape(-1, 1)
    np.savez(work / "synthetic128.npz", train_images=x[:180], train_labels=y[:180], val_images=x[180:],
             val_labels=y[180:])
    run = work / "resnet18_128"
    subprocess.run([sys.executable, "-c", "import sys; from meddx.cli import main; sys.exit(main())", "train",
                    str(work / "synthetic128.npz"), "--model", "resnet18", "--epochs", "2", "--out", str(run)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return run


def measure(args: argparse.Namespace, run: str, size: int) -> bool:
    """Ceiling, load phase, burst and liveness for one RUN; True when the behaviour checks pass."""
    import httpx

    from tests.service.helpers import free_port

    images = pngs(64, size)
    ceil = ceiling(run, images, args.heatmap, batch=16)
    print(f"RUN {Path(run).name} ({size}x{size} PNGs)")
    print(f"in-process predict_batch (decode + predict, batch 16): {ceil:.1f} studies/s")
    params = {"heatmap": str(args.heatmap).lower(), "save": str(not args.no_save).lower()}
    port = args.port or free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="meddx-bench-") as results:
        proc = start_server(run, port, args.workers, args.queue, results)
        try:
            wait_up(url, proc)
            load_phase(url, images, 16, args.clients, params, 60)  # warm-up
            r = load_phase(url, images, args.requests, args.clients, params, args.max_seconds, raw=args.raw)
            print(f"service: {r['n']} requests, {args.clients} clients, workers {args.workers}, queue {args.queue}, "
                  f"heatmap {args.heatmap}, save {not args.no_save}, {'raw body' if args.raw else 'multipart'}: "
                  f"p50 {r['p50_ms']:.0f} ms, p95 {r['p95_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms, "
                  f"{r['throughput']:.1f} req/s ({r['throughput'] / ceil:.2f}x the in-process ceiling), "
                  f"errors {r['errors']} {r['codes']}")
            health = httpx.get(url + "/healthz", timeout=10).json()
            print(f"mean model batch over the last 200 calls: {health.get('mean_batch')}")
            b = burst(url, images[0], args.burst, params)
            alive = httpx.get(url + "/healthz", timeout=10).status_code == 200 and proc.poll() is None
            after = httpx.post(url + "/v1/predict", params=params, headers={"Authorization": f"Bearer {TOKEN}"},
                               files={"file": ("x.png", images[1])}, timeout=120).status_code
            print(f"burst of {args.burst} concurrent over queue {args.queue}: {b}; server alive {alive}, "
                  f"next request {after}")
            return r["errors"] == 0 and b.get(503, 0) > 0 and alive and after == 200
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", help="measure this RUN only (default: the demo CNN, then a ResNet-18 at 128 px)")
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--queue", type=int, default=16)
    ap.add_argument("--burst", type=int, default=120, help="concurrent requests of the burst (> --queue)")
    ap.add_argument("--no-heatmap", dest="heatmap", action="store_false",
                    help="no Grad-CAM per request (nor in the ceiling); the service's default makes one")
    ap.add_argument("--no-save", action="store_true", help="do not store each result for the viewer")
    ap.add_argument("--raw", action="store_true", help="send each PNG as the raw body instead of multipart")
    ap.add_argument("--size", type=int, default=64, help="PNG side in pixels (with --run)")
    ap.add_argument("--max-seconds", type=float, default=600)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))

    if args.run:
        ok = measure(args, args.run, args.size)
    else:
        with tempfile.TemporaryDirectory(prefix="meddx-bench-run-") as work:
            from tests.fixture_runs import DEMO_CLS, ensure_demo_ood

            ensure_demo_ood()  # the fixture's ood.npz is fitted on first use, not kept in git
            ok = measure(args, str(DEMO_CLS), 64)
            print()
            ok = measure(args, str(resnet_run(Path(work))), 128) and ok
    print("PASS" if ok else "FAIL")


if __name__ == "__main__":
    main()
