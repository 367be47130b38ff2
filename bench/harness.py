"""What the benchmarks share: the import path and a fake AWS environment (set on import, before boto3 and the
pipeline are imported), the steps' metric lines dropped, and the local PagerDuty server in its own process
(pre-serialized pages, no rate limit), so that it does not compete with the loader for the GIL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "layer", "python")]
for _k, _v in {"AWS_DEFAULT_REGION": "eu-west-2", "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}.items():
    os.environ.setdefault(_k, _v)
os.environ.pop("AWS_ENDPOINT_URL", None)

from pagerduty_pipeline import metrics  # noqa: E402

# The steps' EMF metric lines (pagerduty_pipeline/metrics.py) would interleave with the figures printed here: the
# benchmarks measure their own way, so the lines are dropped.
metrics.set_writer(lambda line: None)

TOKEN = "bench-token"


def start_server(n: int, *, start: datetime, days: float, seed: int = 42,
                 extra: tuple[str, ...] = ("--rate-limit", str(10 ** 9))) -> tuple[subprocess.Popen, str]:
    """`python -m tests.support.fake_pagerduty` serving a generated account (``extra``: more of its options, by
    default no rate limit); returns the process and its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.fake_pagerduty", "--incidents", str(n), "--seed", str(seed),
         "--start", start.isoformat(), "--days", str(days), "--token", TOKEN, "--warm", *extra],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        raise RuntimeError("fake server did not start")
    return proc, url


def pipeline_env(pg, url: str, **variables: str) -> dict:
    """The steps' environment for a throwaway PostgreSQL and a local server: both secrets created in the active
    moto Secrets Manager, no client-side rate limit unless ``variables`` set one, and any other variables."""
    import boto3

    sm = boto3.client("secretsmanager")
    env = pg.env()
    env.update({"DB_SECRET_ARN": sm.create_secret(Name="db", SecretString=json.dumps(pg.secret()))["ARN"],
                "PAGERDUTY_TOKEN_SECRET_ARN": sm.create_secret(Name="pd", SecretString=TOKEN)["ARN"],
                "PAGERDUTY_API_URL": url, "PAGERDUTY_RATE_LIMIT_PER_MINUTE": str(10 ** 9), **variables})
    return env
