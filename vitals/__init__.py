"""The shared kernel every stage imports: settings, the wire contract, the metric catalog,
accepted ranges and identifiers, errors, Kafka client set-up and the consume loop, probes,
lifecycle, logs, task supervision, and the database schema (`vitals.db`). It imports no
stage and no tool."""
