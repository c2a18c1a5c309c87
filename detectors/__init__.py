"""Online drift detectors for AI model interactions.

Pure Python + numpy + river: no Kafka, no asyncio, no I/O. The same code runs
inside the Faust monitor agent and in the offline ``driftline replay`` command.
"""

from detectors.cusum import CUSUM, BernoulliCUSUM
from detectors.monitor import ModelMonitor, MonitorConfig
from detectors.types import KINDS, Finding, InvalidValue, Observation, SignalStats

__all__ = [
    "CUSUM",
    "KINDS",
    "BernoulliCUSUM",
    "Finding",
    "InvalidValue",
    "ModelMonitor",
    "MonitorConfig",
    "Observation",
    "SignalStats",
]
