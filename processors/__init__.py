"""The processor stage: event-time windows and detectors over vitals.readings.

Pure core (windows, episodes, detectors, engine) and a thin Kafka shell (replay, runner).
"""
