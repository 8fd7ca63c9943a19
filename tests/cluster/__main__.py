"""``python -m tests.cluster up|down|status``: the bed by hand (as root).

``up`` leaves the bed running and prints how to reach it; run workers yourself with
``ip netns exec hpoc-h1 hpo worker STUDY --storage URL``, break things with ``ip link set
hpoc-v-h1 down``, and finish with ``down``, which removes everything the bed made.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from tests.cluster import net
from tests.cluster.bed import Bed
from tests.cluster.postgres import BOUNCER_PORT, PG_PORT


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--no-pgbouncer", action="store_true", help="up: without PgBouncer")
    args = parser.parse_args(argv)
    bed = Bed()
    if args.command == "up":
        try:
            bed.up(pgbouncer=not args.no_pgbouncer)
        except Exception as err:
            bed.down()
            print(f"Error: the bed did not come up: {err}", file=sys.stderr)
            return 1
        print(f"bed up; state in {bed.state}")
        print(f"PostgreSQL: postgresql+psycopg://postgres@{net.DB.addr}:{PG_PORT}/postgres")
        if not args.no_pgbouncer:
            print(f"PgBouncer:  postgresql+psycopg://postgres@{net.DB.addr}:{BOUNCER_PORT}/DB")
        hosts = ", ".join(f"{h.netns} ({h.addr}, link {h.veth})" for h in net.HOSTS)
        print(f"hosts: {hosts}")
    elif args.command == "down":
        bed.down()
        print("bed down")
    else:
        print(json.dumps(bed.status(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
