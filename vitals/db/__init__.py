"""The product's database schema: SQL migrations (every stage's tables: readings, alerts,
scores, the registry, the read audit), their runner, the processes' login roles, and the
conversions between epoch milliseconds and PostgreSQL times."""
