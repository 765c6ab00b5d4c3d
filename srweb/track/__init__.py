"""Experiment tracker and crowd-rating statistics on one SQL database (SQLite by default).

``db`` makes the engine and sessions and runs the Alembic migrations; ``runs``, ``evals``,
``ratings`` and ``leaderboard`` hold repository functions that take a Session (callers own the
transaction). Import the submodules directly; nothing here connects at import time::

    from srweb.track import runs
    from srweb.track.db import init_db, session_scope, write_transaction

    init_db()                                   # once per process: upgrade to the newest schema
    run_id = write_transaction(lambda s: runs.create_run(s, name=..., arch=..., scale=2, config=cfg).id)
    with session_scope(write=False) as session:  # reads never wait for writers (WAL)
        frame = runs.metric_series(session, run_id, ["loss", "val_psnr"])
"""
