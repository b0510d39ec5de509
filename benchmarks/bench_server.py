"""Benchmark `lookalike serve` on a 10,000-photo collection: latency, throughput, memory, start-up.

The collection: Caltech-101's 8,677 photos plus horizontally-flipped copies of 1,323 of them (every
~6.6th photo in sorted path order), written as JPEG to a folder beside the collection
(`<collection>-flipped/<category>/flipped_<name>.jpg`), to reach 10,000. Built once into
--collection (reused when it holds 10,000 photos made with the current encoder).

All traffic goes to 127.0.0.1 only, bounded in count and time. Three servers run
from the same collection, measured in alternating rounds so they share the machine's load: the
default (micro-batches of up to 16, one encoder worker per core), "unbatched" (--max-batch 1, one
worker per core) and "one_by_one" (--max-batch 1 --encoder-workers 1: uploads queue behind one encoder).

    .venv/bin/python benchmarks/bench_server.py [--collection /tmp/bench10k.lookalike]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[1]
DATASET = Path(os.environ.get("LOOKALIKE_DATASET", ROOT.parent / "shared/datasets/caltech101"))
TARGET = 10_000


def usable(path: Path) -> bool:
    """Whether `path` holds a collection made with the current default encoder."""
    from lookalike import Collection, CollectionError

    if not (path / "manifest.json").exists():
        return False
    with Collection.open(path, readonly=True) as c:
        try:
            c.encoder
        except CollectionError:  # made with another encoder recipe: not comparable
            return False
    return True


def build_collection(path: Path, base: Path | None) -> int:
    """A 10,000-photo collection: Caltech-101 (copied from `base` when it was made with the current
    encoder) plus flipped copies. A collection of this benchmark's made with an older encoder is rebuilt."""
    from lookalike import Collection
    from lookalike.images import scan

    if (path / "manifest.json").exists() and not usable(path):
        shutil.rmtree(path)
    if not path.exists() and base is not None and usable(base):
        shutil.copytree(base, path)
    with Collection.open_or_create(path) as c:
        if len(c) >= TARGET:
            return len(c)
        c.update(DATASET)  # a no-op when copied from an up-to-date base
        found, _ = scan(DATASET)
        need = TARGET - len(found)
        if need > 0:
            flipped = path.with_name(path.name + "-flipped")  # kept: the collection serves these files
            shutil.rmtree(flipped, ignore_errors=True)
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
    def __init__(self, collection: Path, max_batch: int, workers: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "lookalike.cli", "serve", "--collection", str(collection),
               "--port", str(self.port), "--max-batch", str(max_batch), "--encoder-workers", str(workers)]
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


def encoder_reference(collection: Path, queries: list[bytes], n: int) -> list[float]:
    """Seconds per encoder call on one already-decoded image in this process (no HTTP, no decode,
    no search): the CPU's speed under the load of the moment, to express latencies as ratios."""
    from lookalike import open_collection
    from lookalike.images import decode_bytes

    with open_collection(collection, readonly=True) as c:
        encoder = c.encoder
        tensors = [decode_bytes(q, encoder.prep).tensor[None] for q in queries[:n]]
        encoder.embed(tensors[0])
        times = []
        for tensor in tensors:
            t = time.perf_counter()
            encoder.embed(tensor)
            times.append(time.perf_counter() - t)
    return times


def encoder_sharing(collection: Path, queries: list[bytes], configs: list[tuple[int, int]], seconds: float,
                    rounds: int, clients: int = 8) -> dict[tuple[int, int], list[float]]:
    """Images per second through decode + MicroBatcher(encoder) with `clients` threads in a closed
    loop, in this process (no HTTP, no search): how each (max_batch, workers) shares the encoder."""
    from lookalike import open_collection
    from lookalike.images import decode_bytes
    from lookalike.server.batcher import MicroBatcher

    with open_collection(collection, readonly=True) as c:
        encoder = c.encoder
    result: dict[tuple[int, int], list[float]] = {cfg: [] for cfg in configs}
    for _ in range(rounds):
        for max_batch, workers in configs:
            batcher = MicroBatcher(encoder.embed, max_batch, 0.002, workers)
            stop = time.perf_counter() + seconds
            done = [0] * clients

            def client(n: int) -> None:
                i = n
                while time.perf_counter() < stop:
                    with batcher.expecting():
                        future = batcher.submit(decode_bytes(queries[i % len(queries)], encoder.prep).tensor)
                    future.result()
                    done[n] += 1
                    i += clients

            threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            batcher.close()
            result[(max_batch, workers)].append(sum(done) / seconds)
    return result


def percentiles(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {"n": len(ms), "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def single_times(url: str, queries: list[bytes], n: int, offset: int) -> list[float]:
    with httpx.Client(base_url=url, timeout=30) as client:
        search(client, queries[offset % len(queries)])  # connection set up
        return [search(client, queries[(offset + i) % len(queries)]) for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--collection", type=Path, default=Path("/tmp/bench10k.lookalike"))
    ap.add_argument("--base", type=Path, default=Path("/tmp/caltech.lookalike"), help="Caltech-101 collection to start from")
    ap.add_argument("--rounds", type=int, default=4, help="measurement rounds, alternating the two servers")
    ap.add_argument("--single", type=int, default=60, help="sequential queries per server per round")
    ap.add_argument("--concurrent", type=int, default=240, help="8-client queries per server per round")
    ap.add_argument("--sharing-seconds", type=float, default=6, help="per in-process encoder-sharing run")
    ap.add_argument("--rss-queries", type=int, default=10_000, help="queries for the memory run (batched server)")
    ap.add_argument("--time-limit", type=float, default=600, help="seconds, per load run at most")
    args = ap.parse_args()

    items = build_collection(args.collection, args.base)
    cores = os.cpu_count() or 1
    photos = sorted(DATASET.glob("*/*.jpg"))
    queries = [p.read_bytes() for p in photos[7::43]]  # ~200 photos spread over the categories
    load_before = os.getloadavg()
    sharing = encoder_sharing(args.collection, queries, [(16, cores), (1, cores), (1, 1)], args.sharing_seconds, 3)
    servers = {  # the default; concurrent single-image runs without batching; one by one behind a lock
        "batched": Server(args.collection, 16, cores),
        "unbatched": Server(args.collection, 1, cores),
        "one_by_one": Server(args.collection, 1, 1),
    }
    try:
        report = {name: {"startup_s": s.startup_s, "single": [], "qps": [], "errors": 0, "p50_8": []}
                  for name, s in servers.items()}
        reference: list[float] = []
        ratios = {"qps_batched_over_one_by_one": [], "qps_batched_over_unbatched": [],
                  "p50_server_over_encoder_alone": []}
        for r in range(args.rounds):  # alternate, so both servers and the reference see the same load
            ref = encoder_reference(args.collection, queries, args.single // 2)
            reference += ref
            qps = {}
            for name, server in servers.items():
                single = single_times(server.url, queries, args.single, offset=r * args.single)
                report[name]["single"] += single
                c = concurrent(server.url, queries, 8, args.concurrent, args.time_limit)
                report[name]["qps"].append(c["qps"])
                report[name]["errors"] += c["errors"]
                report[name]["p50_8"].append(c["p50_ms"])
                qps[name] = c["qps"]
                if name == "batched":
                    ratios["p50_server_over_encoder_alone"].append(
                        float(np.median(single)) / float(np.median(ref)))
            ratios["qps_batched_over_one_by_one"].append(qps["batched"] / qps["one_by_one"])
            ratios["qps_batched_over_unbatched"].append(qps["batched"] / qps["unbatched"])
            print(json.dumps({"round": r + 1, "qps": qps, "load": os.getloadavg()[0],
                              "p50_ms": {n: float(np.median(report[n]["single"][-args.single:]) * 1000)
                                         for n in servers}}), flush=True)
        for name, server in servers.items():
            report[name]["stats"] = httpx.get(server.url + "/api/stats").json()["batching"]

        memory = None
        if args.rss_queries:
            server = servers["batched"]
            samples: list[tuple[int, float]] = []
            step = max(1, args.rss_queries // 10)

            def sample(done: int) -> None:
                if done % step == 0:
                    samples.append((done, rss_mb(server.proc.pid)))

            start_rss = rss_mb(server.proc.pid)
            run = concurrent(server.url, queries, 8, args.rss_queries, args.time_limit, sample)
            memory = {"start_mb": start_rss, "samples": samples, **{k: run[k] for k in ("queries", "errors", "seconds", "qps")}}
    finally:
        for server in servers.values():
            server.stop()

    print("\nsummary")
    print(f"collection  {items:,} photos; {os.cpu_count()} CPUs shared; load average (1 min) before "
          f"{load_before[0]:.1f}, after {os.getloadavg()[0]:.1f}")
    ref = percentiles(reference)
    print(f"encoder alone, one decoded image, in-process: p50 {ref['p50_ms']:.1f} ms  p99 {ref['p99_ms']:.1f} ms  (n={ref['n']})")
    for name, r in report.items():
        s = percentiles(r["single"])
        print(f"{name:<11} start-up {r['startup_s']:.1f} s | 1 client p50 {s['p50_ms']:.1f} ms p99 {s['p99_ms']:.1f} ms"
              f" (n={s['n']}) | 8 clients median {np.median(r['qps']):.1f} q/s (rounds: "
              f"{', '.join(f'{q:.1f}' for q in r['qps'])}), {r['errors']} errors, median p50 {np.median(r['p50_8']):.0f} ms"
              f" | encoder calls {r['stats']['batches']} for {r['stats']['uploads']} uploads")
    for (max_batch, workers), values in sharing.items():
        print(f"in-process encoder sharing, 8 threads, max_batch {max_batch:>2}, {workers} worker(s): median "
              f"{np.median(values):.1f} images/s (rounds: {', '.join(f'{v:.1f}' for v in values)})")
    for key, values in ratios.items():
        print(f"ratio {key}: median {np.median(values):.2f} (rounds: {', '.join(f'{v:.2f}' for v in values)})")
    if memory:
        rss = ", ".join(f"{n}:{v:.0f}" for n, v in memory["samples"])
        print(f"memory run  {memory['queries']} queries, 8 clients, {memory['seconds']:.0f} s, {memory['qps']:.1f} q/s, "
              f"{memory['errors']} errors; RSS MB at start {memory['start_mb']:.0f}, at query n: {rss}")


if __name__ == "__main__":
    main()
