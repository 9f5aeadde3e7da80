"""The readings sink: SQL migrations, the COPY-then-upsert writer and its consume loop."""
