"""Benchmark `lookalike serve` on a 10,000-photo collection: latency, throughput, memory, start-up.

The collection: Caltech-101's 8,677 photos plus horizontally-flipped copies of 1,323 of them (every
~6.6th photo in sorted path order), written to a temporary folder under their own category, to
reach 10,000. Built once into --collection (reused when it already holds 10,000 photos).

All traffic goes to 127.0.0.1 only, bounded in count and time. Two servers run one after the other
from the same collection: micro-batching (the default, --max-batch 16) and one-by-one (--max-batch 1).

    .venv/bin/python benchmarks/bench_server.py [--collection /tmp/bench10k.lookalike]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[1]
DATASET = Path(os.environ.get("LOOKALIKE_DATASET", ROOT.parent / "shared/datasets/caltech101"))
TARGET = 10_000


def build_collection(path: Path, base: Path | None) -> int:
    """A 10,000-photo collection: Caltech-101 (copied from `base` when given) plus flipped copies."""
    from lookalike import Collection
    from lookalike.images import scan

    if (path / "manifest.json").exists():
        with Collection.open(path) as c:
            if len(c) >= TARGET:
                return len(c)
    elif base is not None and (base / "manifest.json").exists():
        shutil.copytree(base, path)
    with Collection.open_or_create(path) as c:
        c.update(DATASET)  # a no-op when copied from an up-to-date base
        found, _ = scan(DATASET)
        need = TARGET - len(c)
        if need > 0:
            flipped = Path(tempfile.mkdtemp(prefix="lookalike-flipped-"))
            step = len(found) / need
            for n in range(need):
                f = found[int(n * step)]
                out = flipped / f"{f.category}" / f"flipped_{Path(f.path).name}"
                out.parent.mkdir(parents=True, exist_ok=True)
                ImageOps.mirror(Image.open(f.path).convert("RGB")).save(out, quality=95)
            c.update(flipped)
        return len(c)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class Server:
    def __init__(self, collection: Path, max_batch: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "lookalike.cli", "serve", "--collection", str(collection),
               "--port", str(self.port), "--max-batch", str(max_batch)]
        started = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = started + 120
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.perf_counter() > deadline:
                raise RuntimeError("server did not start in 120 s")
            time.sleep(0.05)
        self.startup_s = time.perf_counter() - started

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def search(client: httpx.Client, data: bytes, k: int = 10) -> float:
    t = time.perf_counter()
    r = client.post("/api/search", files={"image": ("q.jpg", data, "image/jpeg")}, data={"k": str(k)})
    elapsed = time.perf_counter() - t
    if r.status_code != 200 or len(r.json()["results"]) != k:
        raise RuntimeError(f"bad answer {r.status_code}: {r.text[:200]}")
    return elapsed


def single_client(url: str, queries: list[bytes], n: int) -> dict:
    with httpx.Client(base_url=url, timeout=30) as client:
        for q in queries[:20]:  # warm-up
            search(client, q)
        times = [search(client, queries[i % len(queries)]) for i in range(n)]
    ms = np.asarray(times) * 1000
    return {"n": n, "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def concurrent(url: str, queries: list[bytes], clients: int, total: int, time_limit: float,
               on_progress=None) -> dict:
    """`clients` threads, each with its own connection, share `total` queries; stops at `time_limit`."""
    counter = iter(range(total))
    lock = threading.Lock()
    done, errors, times = [0], [], []
    deadline = time.perf_counter() + time_limit

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while time.perf_counter() < deadline:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                try:
                    t = search(client, queries[i % len(queries)])
                except Exception as e:  # counted, reported
                    with lock:
                        errors.append(repr(e)[:200])
                    continue
                with lock:
                    times.append(t)
                    done[0] += 1
                    if on_progress:
                        on_progress(done[0])

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    ms = np.asarray(times) * 1000
    return {
        "clients": clients, "queries": done[0], "errors": len(errors), "first_errors": errors[:3],
        "seconds": elapsed, "qps": done[0] / elapsed,
        "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
        "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None,
    }


def in_process_reference(collection: Path, queries: list[bytes], n: int) -> dict:
    """Decode + encode + search one image at a time in this process: the floor the server adds to."""
    from lookalike import open_collection

    with open_collection(collection, readonly=True) as c:
        for q in queries[:10]:
            c.search(q, k=10)
        times = []
        for i in range(n):
            t = time.perf_counter()
            c.search(queries[i % len(queries)], k=10)
            times.append(time.perf_counter() - t)
    ms = np.asarray(times) * 1000
    return {"n": n, "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--collection", type=Path, default=Path("/tmp/bench10k.lookalike"))
    ap.add_argument("--base", type=Path, default=Path("/tmp/caltech.lookalike"), help="Caltech-101 collection to start from")
    ap.add_argument("--single", type=int, default=300, help="sequential queries for latency")
    ap.add_argument("--concurrent", type=int, default=800, help="queries for the 8-client throughput runs")
    ap.add_argument("--rss-queries", type=int, default=10_000, help="queries for the memory run")
    ap.add_argument("--time-limit", type=float, default=600, help="seconds, per load run at most")
    args = ap.parse_args()

    items = build_collection(args.collection, args.base)
    photos = sorted(DATASET.glob("*/*.jpg"))
    queries = [p.read_bytes() for p in photos[7::43]]  # ~200 photos spread over the categories
    report: dict = {"items": items, "cpus": os.cpu_count(), "load_before": os.getloadavg()}
    report["in_process"] = in_process_reference(args.collection, queries, args.single)
    print(json.dumps({"in_process": report["in_process"]}), flush=True)

    for name, max_batch in [("batched", 16), ("one_by_one", 1)]:
        server = Server(args.collection, max_batch)
        try:
            result = {"startup_s": server.startup_s, "rss_after_start_mb": rss_mb(server.proc.pid)}
            result["single"] = single_client(server.url, queries, args.single)
            result["eight_clients"] = concurrent(server.url, queries, 8, args.concurrent, args.time_limit)
            result["stats"] = httpx.get(server.url + "/api/stats").json()["batching"]
            if name == "batched" and args.rss_queries:
                samples: list[tuple[int, float]] = []
                step = max(1, args.rss_queries // 10)

                def sample(done: int) -> None:
                    if done % step == 0:
                        samples.append((done, rss_mb(server.proc.pid)))

                run = concurrent(server.url, queries, 8, args.rss_queries, args.time_limit, sample)
                result["memory_run"] = {k: run[k] for k in ("queries", "errors", "seconds", "qps")}
                result["rss_mb"] = samples
            report[name] = result
            print(json.dumps({name: result}), flush=True)
        finally:
            server.stop()
    report["load_after"] = os.getloadavg()
    b, o = report["batched"], report["one_by_one"]
    print("\nsummary")
    print(f"collection            {items:,} photos; {report['cpus']} CPUs; load average before "
          f"{report['load_before'][0]:.1f}, after {report['load_after'][0]:.1f}")
    print(f"start-up (to healthz) {b['startup_s']:.1f} s batched, {o['startup_s']:.1f} s one-by-one")
    print(f"in-process search     p50 {report['in_process']['p50_ms']:.1f} ms  p99 {report['in_process']['p99_ms']:.1f} ms")
    for name, r in [("batched", b), ("one-by-one", o)]:
        s, c = r["single"], r["eight_clients"]
        print(f"{name:<11} 1 client  p50 {s['p50_ms']:.1f} ms  p99 {s['p99_ms']:.1f} ms"
              f" | 8 clients {c['qps']:.1f} q/s, {c['queries']} queries, {c['errors']} errors,"
              f" p50 {c['p50_ms']:.1f} ms p99 {c['p99_ms']:.1f} ms")
    print(f"8-client q/s, batched / one-by-one: {b['eight_clients']['qps'] / o['eight_clients']['qps']:.2f}x")
    print(f"1-client p50, server / in-process:  {b['single']['p50_ms'] / report['in_process']['p50_ms']:.2f}x")
    if "rss_mb" in b:
        m = b["memory_run"]
        rss = ", ".join(f"{n}:{v:.0f}" for n, v in b["rss_mb"])
        print(f"memory run: {m['queries']} queries in {m['seconds']:.0f} s, {m['errors']} errors; RSS MB at query n: {rss}")


if __name__ == "__main__":
    main()
