"""Online drift detectors for AI model interactions.

Pure Python + numpy + river: no Kafka, no asyncio, no I/O. The same code runs
inside the Faust monitor agent and in the offline ``driftline replay`` command.
"""

from driftline.detectors.catalogue import SIGNALS, SignalSpec
from driftline.detectors.cusum import CUSUM, BernoulliCUSUM
from driftline.detectors.monitor import ModelMonitor, MonitorConfig
from driftline.detectors.types import KINDS, Finding, InvalidValue, Observation, SignalStats

__all__ = [
    "CUSUM",
    "KINDS",
    "SIGNALS",
    "BernoulliCUSUM",
    "Finding",
    "InvalidValue",
    "ModelMonitor",
    "MonitorConfig",
    "Observation",
    "SignalSpec",
    "SignalStats",
]
