"""``srweb worker`` (train queued runs on this machine) and ``srweb workers`` (who is alive)."""

from __future__ import annotations

import argparse
import json


def cmd_worker(args: argparse.Namespace) -> int:
    from srweb.data.folders import show_warnings_as_lines
    from srweb.train import remote

    if args.gpus < 1:
        raise ValueError("--gpus must be 1 or more")
    show_warnings_as_lines()
    return remote.run(args.name, args.gpus)


def cmd_workers(args: argparse.Namespace) -> int:
    from srweb.track.db import init_db, session_scope
    from srweb.track.workers import worker_rows

    init_db()
    with session_scope(write=False) as session:
        rows = worker_rows(session)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no worker alive (start one with `srweb worker` on a machine that trains)")
        return 0
    print(f"{'name':<24}{'host':<20}{'device':<10}{'run':>6}  last heartbeat")
    for row in rows:
        run = str(row["run_id"]) if row["run_id"] is not None else "-"
        print(f"{row['name']:<24}{row['host']:<20}{row['device'] or '-':<10}{run:>6}  {row['heartbeat_at']}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="train queued runs on this machine (needs a PostgreSQL database)")
    p.add_argument("--name", help="this worker's name (default HOST-PID)")
    p.add_argument("--gpus", type=int, default=1, help="GPUs per run; more than 1 trains under torchrun DDP")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("workers", help="list the training workers alive")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_workers)
