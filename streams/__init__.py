"""driftline's streaming layer: the Faust app, its topics, agents, sinks and CLI."""

__version__ = "0.1.0"
