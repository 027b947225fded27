"""What the benchmark scripts share: free loopback ports, a gemma server started on them and
waited for, percentiles, and /health timed while something else runs."""

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(binary, data, args, env, log, inference, control):
    """`binary serve` with the gemma model on loopback ports `inference` and `control`, its
    data in `data`, `args` added, `env` over the process's; returns once /health answers."""
    server = subprocess.Popen(
        [binary, "serve", "--model", "gemma-3-270m", "--data-dir", data, *args,
         "--inference-addr", f"127.0.0.1:{inference}", "--control-addr", f"127.0.0.1:{control}"],
        env=dict(os.environ, **env), stdout=log, stderr=subprocess.STDOUT)
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{inference}/health", timeout=1)
            return server
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    server.kill()
    sys.exit(f"{binary} did not become healthy")


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def health_times(url, stop):
    """/health latencies (ms) of the requests started before stop() is true."""
    out = []
    while not stop():
        t = time.perf_counter()
        with urllib.request.urlopen(url, timeout=60) as r:
            r.read()
        out.append((time.perf_counter() - t) * 1000)
        time.sleep(0.005)
    return out
