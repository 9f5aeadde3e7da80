"""How long the stored history lives: the retention settings, applied to the database.

Raw readings and NEWS2 scores are dropped after `readings_retention_days` and
`scores_retention_days` (vitals/settings.py RetentionSettings; docs/storage.md, Retention,
says why the defaults are 8 years). Nothing a clinician signed has a retention: `alerts`
(with the outcome their episode ended with) and `alert_lifecycle` (acknowledgements,
escalations, outcomes) are kept until a person decides otherwise.

TimescaleDB: `vitals db migrate` (and a sink migrating at start) sets each table's
retention policy to the setting after the migration files, replacing the policy only when
it differs, so a second run changes nothing and a changed setting takes effect at the next
migrate. Plain PostgreSQL has no scheduler: `vitals db prune`, run daily by cron or a
Kubernetes CronJob, deletes the same rows (on TimescaleDB it has nothing to do).
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from vitals.errors import InfrastructureError
from vitals.settings import RetentionSettings

log = logging.getLogger(__name__)

# table -> (its time column, the setting that bounds it). Never alerts or alert_lifecycle.
TABLES = {
    "readings": ("t", "readings_retention_days"),
    "news2_scores": ("t", "scores_retention_days"),
}


def policy_sql(retention: RetentionSettings) -> str:
    """The TimescaleDB policies as the settings say: one DO block per table that removes and
    re-adds the policy only when its drop_after differs (idempotent)."""
    blocks = []
    for table, (_, setting) in TABLES.items():
        days = int(getattr(retention, setting))
        blocks.append(
            f"""DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM timescaledb_information.jobs
        WHERE proc_name = 'policy_retention' AND hypertable_name = '{table}'
          AND hypertable_schema = current_schema()
          AND (config->>'drop_after')::interval = INTERVAL '{days} days'
    ) THEN
        PERFORM remove_retention_policy('{table}', if_exists => TRUE);
        PERFORM add_retention_policy('{table}', drop_after => INTERVAL '{days} days');
    END IF;
END
$$;"""
        )
    return "\n".join(blocks)


# For `vitals status`: whether the server has TimescaleDB's jobs, and every retention policy.
HAS_JOBS = "SELECT to_regclass('timescaledb_information.jobs') IS NOT NULL"
POLICIES = """
SELECT hypertable_name AS relation,
       (extract(epoch FROM (config->>'drop_after')::interval) / 86400)::float8 AS days
FROM timescaledb_information.jobs
WHERE proc_name = 'policy_retention' AND hypertable_schema = current_schema()
ORDER BY 1"""


def policy_problems(policies: list[dict[str, Any]], retention: RetentionSettings) -> list[str]:
    """What in `policies` (rows of POLICIES) needs a person: a policy on what a clinician
    signed, or one that differs from the settings (`vitals db migrate` not run since)."""
    problems = []
    found = {p["relation"]: p["days"] for p in policies}
    for relation in sorted(set(found) - set(TABLES)):
        problems.append(
            f"a retention policy on {relation} would drop clinical records: "
            f"SELECT remove_retention_policy('{relation}') (docs/storage.md, Retention)"
        )
    for table, (_, setting) in TABLES.items():
        days = int(getattr(retention, setting))
        kept = found.get(table)
        if kept != days:
            problems.append(
                f"{table} keeps {'forever' if kept is None else f'{kept:g} days'}, "
                f"{setting} says {days} days: run `vitals db migrate`"
            )
    return problems


def made_for_timescale(conn: psycopg.Connection) -> bool:
    """Whether the database was migrated with the TimescaleDB companions."""
    row = conn.execute(
        "SELECT 1 FROM schema_migrations WHERE name LIKE '%.timescale' LIMIT 1"
    ).fetchone()
    return row is not None


def prune(database_url: str, retention: RetentionSettings) -> dict[str, int] | None:
    """Delete what the settings no longer keep, now: table -> rows deleted (plain
    PostgreSQL); None on a TimescaleDB database, whose retention policies drop whole chunks
    once a day by themselves."""
    try:
        conn = psycopg.connect(database_url, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise InfrastructureError(f"database unreachable for pruning: {exc}") from exc
    done: dict[str, int] = {}
    with conn:
        if made_for_timescale(conn):
            return None
        for table, (column, setting) in TABLES.items():
            days = int(getattr(retention, setting))
            # One statement per table: the BRIN index on the time column finds the rows;
            # run daily, each run deletes about a day's worth.
            cur = conn.execute(
                f"DELETE FROM {table} WHERE {column} < now() - make_interval(days => %s)",
                (days,),
            )
            done[table] = cur.rowcount
            log.info("pruned", extra={"table": table, "rows": done[table], "days": days})
    return done
