"""Experiment tracker and crowd-rating statistics on one SQL database (SQLite by default).

``db`` makes the engine and sessions and runs the Alembic migrations; ``runs``, ``evals``,
``ratings`` and ``leaderboard`` are repository functions that take a Session (callers own the
transaction). Import the submodules directly; nothing here connects at import time.
"""
