"""Time a whole `python main.py` synth process with the lazy provider import and with the stock import.

    pipenv run python bench/synth_speed.py [--runs 3]
Prints per-run wall times, the median of each variant and the speed-up. The first (cold) run of each
variant is reported separately: it includes .pyc compilation and, once per machine, jsii's package cache.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def synth_once(stock: bool, outdir: Path) -> float:
    env = dict(os.environ)
    env.pop("STEPFUNC_STOCK_IMPORT", None)
    if stock:
        env["STEPFUNC_STOCK_IMPORT"] = "1"
    started = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "main.py"), "--outdir", str(outdir)], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs per variant after one warm-up")
    args = parser.parse_args()
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for variant in ("fast", "stock"):
            warmup = synth_once(variant == "stock", Path(scratch) / f"{variant}-warmup")
            runs = [synth_once(variant == "stock", Path(scratch) / f"{variant}-{index}") for index in range(args.runs)]
            results[variant] = runs
            print(f"{variant:>5}: warm-up {warmup:6.2f} s; runs " + ", ".join(f"{run:.2f} s" for run in runs))
    fast, stock = (statistics.median(results[variant]) for variant in ("fast", "stock"))
    print(f"\nmedian whole synth process (2 stacks): fast {fast:.2f} s, stock {stock:.2f} s, "
          f"speed-up {stock / fast:.1f}x (target: fast <= 4 s and >= 3x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
