"""Store fixtures: the session's real PostgreSQL (tests/conftest.py), emptied per test.

(Not imported again here: a second session-scoped embedded server started while the first
ran, and pgserver's initdb, run as root, then failed on its data directory's permissions.)
"""
