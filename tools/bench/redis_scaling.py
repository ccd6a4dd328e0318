#!/usr/bin/env python3
"""Jobs per minute with 1, 2 and 3 workers on one Redis queue, and the
queue's added latency per job (Redis against in-memory, the same job).

Standard library only. Starts its own redis-server on a free port and the
worker binary (built beforehand: `cargo build -p sd-worker`) with the tiny
model, so the figures show the queue's own overhead rather than the model's.

    tools/bench/redis_scaling.py [--bin PATH] [--jobs 60] [--latency-jobs 20]

Prints one line per figure, with the machine's load (uptime) before and after.
"""

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
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
JOB = {
    "operation": "image_generation",
    "prompt": "a lighthouse at dusk",
    "steps": 4,
    "width": 64,
    "height": 64,
    "seed": 1,
    "scheduler": "euler",
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=120) as resp:
        return resp.status, resp.read()


def wait_ready(url, limit=120):
    end = time.time() + limit
    while time.time() < end:
        try:
            if http("GET", url + "/ready")[0] == 200:
                return
        except Exception:
            pass
        time.sleep(0.1)
    sys.exit(f"{url} never became ready")


def follow(url, sse_url):
    """Reads a job's stream to its end; returns the completion marker."""
    with urllib.request.urlopen(url + sse_url, timeout=300) as resp:
        marker = None
        for raw in resp:
            line = raw.decode().rstrip("\n")
            if line.startswith("data: [") or line == "data:[DONE]":
                marker = line[len("data: "):]
        return marker


def submit(url, body=JOB):
    status, raw = http("POST", url + "/v1/jobs", body)
    assert status == 202, raw
    return json.loads(raw)


class Worker:
    def __init__(self, binary, redis_url=None, worker_id=None):
        self.port = free_port()
        args = [binary, "--model", os.path.join(ROOT, "fixtures", "tiny-sd15"),
                "--port", str(self.port), "--max-queue", "10000"]
        if redis_url:
            args += ["--redis-url", redis_url]
        if worker_id:
            args += ["--worker-id", worker_id]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"
        wait_ready(self.url)

    def stop(self):
        self.process.terminate()
        self.process.wait()


def jobs_per_minute(binary, redis_url, workers, jobs):
    fleet = [Worker(binary, redis_url, f"bench-{i}") for i in range(workers)]
    try:
        for w in fleet:  # warm each engine with one job of its own
            follow(w.url, submit(w.url)["sse_url"])
        start = time.perf_counter()
        created = [submit(fleet[i % workers].url) for i in range(jobs)]
        markers = [follow(fleet[i % workers].url, c["sse_url"]) for i, c in enumerate(created)]
        elapsed = time.perf_counter() - start
        assert all(m == "[DONE]" for m in markers), markers
        ran_on = {}
        for c in created:
            status = json.loads(http("GET", fleet[0].url + "/v1/jobs/" + c["job_id"])[1])
            ran_on[status["worker_id"]] = ran_on.get(status["worker_id"], 0) + 1
        return jobs / elapsed * 60, ran_on
    finally:
        for w in fleet:
            w.stop()


def latency(binary, redis_url, n):
    """Seconds from submission to [DONE], one job at a time, on a worker
    alone and on one with the shared queue, alternating so both see the
    same load; returns the (mean, median) of each."""
    alone = Worker(binary, None, "bench-alone")
    shared = Worker(binary, redis_url, "bench-shared")
    try:
        times = {alone.url: [], shared.url: []}
        for worker in (alone, shared):
            follow(worker.url, submit(worker.url)["sse_url"])
        for _ in range(n):
            for worker in (alone, shared):
                start = time.perf_counter()
                marker = follow(worker.url, submit(worker.url)["sse_url"])
                times[worker.url].append(time.perf_counter() - start)
                assert marker == "[DONE]", marker
        return [(statistics.mean(t), statistics.median(t)) for t in times.values()]
    finally:
        alone.stop()
        shared.stop()


def uptime():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    parser.add_argument("--bin", default=os.path.join(target, "debug", "sd-worker-cpu"))
    parser.add_argument("--jobs", type=int, default=60)
    parser.add_argument("--latency-jobs", type=int, default=20)
    args = parser.parse_args()
    if not shutil.which("redis-server"):
        sys.exit("redis-server is missing (Debian: apt-get install redis-server)")
    port = free_port()
    data = tempfile.mkdtemp(prefix="sd-worker-bench-redis-")
    redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", data],
                             stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        print(f"binary {args.bin}; tiny model, {JOB['steps']} steps, "
              f"{JOB['width']}x{JOB['height']}; {os.cpu_count()} CPUs")
        print(f"load before: {uptime()}")
        for db, workers in enumerate([1, 2, 3], start=1):
            rate, ran_on = jobs_per_minute(args.bin, f"redis://127.0.0.1:{port}/{db}",
                                           workers, args.jobs)
            print(f"{workers} worker(s): {rate:.1f} jobs/min ({args.jobs} jobs; per worker {ran_on})")
        memory, shared = latency(args.bin, f"redis://127.0.0.1:{port}/9", args.latency_jobs)
        print(f"one job at a time, submit to [DONE], {args.latency_jobs} jobs each, alternating: "
              f"in memory mean {memory[0] * 1000:.0f} ms (median {memory[1] * 1000:.0f}); "
              f"Redis mean {shared[0] * 1000:.0f} ms (median {shared[1] * 1000:.0f}); "
              f"added by the queue {(shared[0] - memory[0]) * 1000:.0f} ms mean, "
              f"{(shared[1] - memory[1]) * 1000:.0f} ms median")
        print(f"load after: {uptime()}")
    finally:
        redis.terminate()
        redis.wait()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
