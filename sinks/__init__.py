"""Sinks: the stages that make the pipeline's streams durable.

- `sinks.timescale`: vitals.readings -> the readings table (TimescaleDB or PostgreSQL).
- `sinks.alerts`: vitals.detections -> the alerts table and the public vitals.alerts topic.

Both commit Kafka offsets only after their output is durable, and rewind and retry a
batch when the database or broker fails, so nothing polled is ever lost.
"""
