"""Alembic environment and revisions of the tracker schema (see ``srweb.track.db.init_db``)."""
