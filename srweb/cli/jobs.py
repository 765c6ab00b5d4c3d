"""``srweb jobs list | submit | cancel | resume | logs | delete``: background training jobs, each
action with its own flags (only ``submit`` takes the training flags)."""

from __future__ import annotations

import argparse
import json

from srweb.cli.train import add_config_flags, config_from_args

# Handlers import the core when they run: `srweb --help` and argument errors stay fast (torch, gradio).


def run_json(run) -> dict:
    """One run for ``srweb jobs list --json``."""

    def stamp(moment):
        return moment.isoformat(timespec="seconds") if moment else None

    return {
        "id": run.id,
        "name": run.name,
        "status": run.status,
        "worker": run.worker,
        "host": run.host,
        "device": run.device,
        "step": run.step,
        "iterations": run.total_steps,
        "best_psnr": run.best_psnr,
        "created_at": stamp(run.created_at),
        "started_at": stamp(run.started_at),
        "finished_at": stamp(run.finished_at),
        "heartbeat_at": stamp(run.heartbeat_at),
        "weights": run.weights_name,
        "error": run.error,
    }


def cmd_list(args: argparse.Namespace) -> int:
    from srweb.track.db import session_scope
    from srweb.track.runs import list_runs
    from srweb.train import jobs

    jobs.reap()
    with session_scope(write=False) as session:
        runs = list_runs(session)
        if args.json:
            print(json.dumps([run_json(r) for r in runs], indent=2))
            return 0
        rows = [(r.id, r.status, r.step, r.total_steps, r.best_psnr, r.name, r.error) for r in runs]
    print(f"{'id':>4}  {'status':<10}{'step':>12}  {'best PSNR':>9}  name")
    for rid, status, step, total, best, name, error in rows:
        psnr = f"{best:.2f}" if best is not None else "-"
        print(f"{rid:>4}  {status:<10}{f'{step}/{total}':>12}  {psnr:>9}  {name}{f'  ({error})' if error else ''}")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from srweb.train import jobs

    print(jobs.submit(config_from_args(args)))
    return 0


def cmd_run_action(args: argparse.Namespace) -> int:
    """cancel, resume, logs and delete: one run, named by its id."""
    from srweb.train import jobs

    if args.run_id is None:  # checked here, not by argparse: the one-line error every command gives
        raise ValueError(f"jobs {args.action} needs a RUN_ID")
    if args.action == "cancel":
        print(f"run {args.run_id}: {jobs.cancel(args.run_id)}")
    elif args.action == "resume":
        print(f"run {jobs.resume(args.run_id)}: queued")
    elif args.action == "delete":
        print(jobs.delete(args.run_id))
    else:
        print(jobs.log_tail(args.run_id, args.lines))
    return 0


def _with_database(handler):
    def run(args: argparse.Namespace) -> int:
        from srweb.track.db import init_db

        init_db()
        return handler(args)

    return run


def register(sub: argparse._SubParsersAction) -> None:
    jobs = sub.add_parser("jobs", help="background training jobs")
    actions = jobs.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = actions.add_parser("list", help="every run, newest first")
    p.add_argument("--json", action="store_true", help="one JSON object per run (id, name, status, worker, ...)")
    p.set_defaults(func=_with_database(cmd_list))
    p = actions.add_parser("submit", help="queue a training run (the flags of srweb train)")
    add_config_flags(p)
    p.set_defaults(func=_with_database(cmd_submit))
    for action, about in (
        ("cancel", "stop a queued or running run"),
        ("resume", "queue a stopped run again"),
        ("logs", "the end of a run's log"),
        ("delete", "delete a run that is not running"),
    ):
        p = actions.add_parser(action, help=about)
        p.add_argument("run_id", nargs="?", type=int, metavar="RUN_ID")
        if action == "logs":
            p.add_argument("--lines", type=int, default=40)
        p.set_defaults(func=_with_database(cmd_run_action))
