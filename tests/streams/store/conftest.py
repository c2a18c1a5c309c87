"""Store fixtures: the session's real PostgreSQL, emptied per test."""

from tests.fixtures_postgres import *  # noqa: F403
