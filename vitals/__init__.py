"""What every stage of the pipeline shares: settings, the wire contract, the metric
catalog, topic names, Kafka client set-up, logs, metrics, probes and the CLI."""
