"""Shared fixtures: the real Kafka broker and the real Postgres, once per session."""

import os

# As in the worker (streams/cli.py): one BLAS thread, set before numpy is imported.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from tests.fixtures_kafka import *  # noqa: E402, F403
from tests.fixtures_postgres import *  # noqa: E402, F403
from tests.fixtures_secure_kafka import *  # noqa: E402, F403
