"""Shared fixtures: the real Kafka broker and the real Postgres, once per session."""

from tests.fixtures_kafka import *  # noqa: F403
from tests.fixtures_postgres import *  # noqa: F403
