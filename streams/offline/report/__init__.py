"""A drift report for people without Grafana: per model and signal, the values, each
baseline band over the stretch its reference was in force, the warm-ups, detections and
injected drift (ground truth, when known), and a table scoring each injected drift against
the first detection after it.

One :class:`Report`, three outputs: a self-contained HTML page (inline SVG, no JavaScript;
``_repr_html_`` shows it in a notebook), a PNG drawn with Pillow (no browser), and a JSON
summary. ``driftline replay --report PATH`` (``.html``, ``.png``, ``.json``) and the demo
write them::

    recorder = SeriesRecorder()          # replay feeds it while the monitors run
    recorder.report(truth).write("report.html")
"""

from driftline.streams.offline.report.model import (
    Report,
    Score,
    Segment,
    SignalTrace,
    from_constant_baselines,
)
from driftline.streams.offline.report.recorder import SeriesRecorder

__all__ = ["Report", "Score", "Segment", "SeriesRecorder", "SignalTrace",
           "from_constant_baselines"]
