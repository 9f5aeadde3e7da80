"""Research export: a cohort's readings out of the database, pseudonymised, streamed to a file.

Beside the sinks because it is the pipeline's outbound end for stored data (the sinks write
the tables; the export writes them onward), as `vitals export`. docs/storage.md, "Research
export".
"""
