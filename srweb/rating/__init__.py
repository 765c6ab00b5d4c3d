"""Blind crowd rating: the pool of trials shown to raters (pool); the rows live in srweb.track."""
