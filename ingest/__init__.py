"""The gateway: POST /v1/readings -> one Kafka message per accepted upload."""
