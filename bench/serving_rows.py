"""What one REST Predict of many user rows costs the model server, by ``--max_rows_per_call``.

Starts ``python -m tfrs_recsys.model_server`` on loopback for each setting (a fresh process), waits for the
retrieval model, posts ``{"inputs": {"user_id": [N ids], "history": [["1"]] * N}}`` once, and prints the
server's RSS before, at its peak and after, and the seconds to the answer, as JSON lines. The exports are
``make demo``'s (or any with a retrieval model taking ``user_id`` and ``history``):

    .venv/bin/python bench/serving_rows.py --model-config runs/demo/models/models.config --rows 100000
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request

from tfrs_recsys.serving.stores.local_redis import free_port


def rss_mb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(next(line for line in status if line.startswith("VmRSS")).split()[1]) // 1024


def measure(config: str, model: str, rows: int, setting: int) -> dict:
    grpc_port, rest_port = free_port(), free_port()
    server = subprocess.Popen([sys.executable, "-m", "tfrs_recsys.model_server", f"--port={grpc_port}",
                               f"--rest_api_port={rest_port}", f"--model_config_file={config}",
                               f"--max_rows_per_call={setting}", "--rest_api_timeout_in_ms=600000"],
                              stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{rest_port}/v1/models/{model}"
    try:
        for _ in range(480):
            try:
                states = json.load(urllib.request.urlopen(url, timeout=2))["model_version_status"]
                if any(s["state"] == "AVAILABLE" for s in states):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        body = json.dumps({"inputs": {"user_id": [str(i) for i in range(rows)],
                                      "history": [["1"]] * rows}}).encode()
        before = rss_mb(server.pid)
        peak, done = [before], threading.Event()

        def watch():
            while not done.is_set():
                peak[0] = max(peak[0], rss_mb(server.pid))
                time.sleep(0.02)

        threading.Thread(target=watch, daemon=True).start()
        start = time.perf_counter()
        request = urllib.request.Request(url + ":predict", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=600) as reply:
            answered = len(json.load(reply)["outputs"]["item_ids"])
        seconds = time.perf_counter() - start
        done.set()
        time.sleep(1)
        return {"rows": rows, "max_rows_per_call": setting, "seconds": round(seconds, 2),
                "rows_answered": answered, "rss_before_mb": before, "rss_peak_mb": peak[0],
                "rss_after_mb": rss_mb(server.pid)}
    finally:
        server.terminate()
        server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-config", required=True, help="a models.config serving the retrieval model")
    parser.add_argument("--model", default="retrieval")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--settings", default="1024,0", help="--max_rows_per_call values, comma-separated")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for setting in (int(s) for s in args.settings.split(",")):
        print(json.dumps(measure(args.model_config, args.model, args.rows, setting)), flush=True)


if __name__ == "__main__":
    main()
