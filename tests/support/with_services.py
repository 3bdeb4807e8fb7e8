"""Run a command with a throwaway PostgreSQL and Redis on loopback, exported as DATABASE_URL
and REDIS_URL: `python -m tests.support.with_services -- pytest ...` (used by `make test` in CI)."""
from __future__ import annotations

import os
import subprocess
import sys

from tests.support.procs import postgres, redis_server


def main(argv: list[str]) -> int:
    command = argv[argv.index("--") + 1:] if "--" in argv else argv
    with postgres() as pg, redis_server() as redis_url:
        env = {**os.environ, "DATABASE_URL": pg.url, "REDIS_URL": redis_url}
        print(f"with PostgreSQL at {pg.url} and Redis at {redis_url}", flush=True)
        return subprocess.call(command, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
