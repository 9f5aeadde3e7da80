"""The processor's Prometheus metrics (served on /metrics by the consumer loop's probes)."""

from __future__ import annotations

from collections import Counter as Counts

from prometheus_client import Counter, Gauge

WINDOWS = Gauge("vitals_processor_windows", "Series windows (patient, metric) held in memory")
READINGS_HELD = Gauge("vitals_processor_window_readings", "Readings held in the windows")
DETECTIONS = Counter(
    "vitals_processor_detections_total", "Detections published", ["rule", "state", "severity"]
)
NEWS2_SCORES = Counter(
    "vitals_processor_news2_scores_total", "NEWS2 score changes published on vitals.news2"
)
REPLAYED = Counter(
    "vitals_processor_replayed_records_total",
    "Records fed silently to rebuild state after an assignment",
)
CHECKPOINTS = Counter(
    "vitals_processor_checkpoints_total",
    "Checkpoint rounds written to vitals.processor-state (one per partition)",
)
CHECKPOINT_RECORDS_READ = Counter(
    "vitals_processor_checkpoint_records_read_total",
    "Records of vitals.processor-state read to restore partitions (offsets spanned)",
)
REPLAYING = Gauge("vitals_processor_replaying_partitions", "Partitions still replaying")
SKIPPED = Counter(
    "vitals_processor_skipped_records_total", "Records not fed to the detectors", ["reason"]
)
IGNORED = Counter(
    "vitals_processor_ignored_total",
    "Readings left out of the windows, and decisions late data contradicted",
    ["reason"],
)


class CountsExporter:
    """Publishes the growth of the engine's plain counters (the core knows no Prometheus)."""

    def __init__(self) -> None:
        self._seen: Counts[str] = Counts()

    def export(self, counts: Counts[str]) -> None:
        for reason, total in counts.items():
            delta = total - self._seen[reason]
            if delta > 0:
                IGNORED.labels(reason).inc(delta)
                self._seen[reason] = total
