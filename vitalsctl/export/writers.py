"""Export file formats: CSV always, Parquet with the `export` extra (pyarrow).

Both take rows in batches and write them as they come, so a file of any size is written
with one batch in memory.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Protocol

from vitals.errors import ConfigError

COLUMNS = ("subject", "metric", "t", "value", "unit", "source")
FORMATS = ("csv", "parquet")
ExportRow = tuple[str, str, datetime, float, str, str]


class Writer(Protocol):
    def write(self, rows: Sequence[ExportRow]) -> None: ...

    def close(self) -> None: ...


class CsvWriter:
    def __init__(self, path: Path) -> None:
        self._file: IO[str] = path.open("w", newline="", encoding="utf-8")
        self._csv = csv.writer(self._file)
        self._csv.writerow(COLUMNS)

    def write(self, rows: Sequence[ExportRow]) -> None:
        self._csv.writerows(
            (subject, metric, t.isoformat(), repr(value), unit, source)
            for subject, metric, t, value, unit, source in rows
        )

    def close(self) -> None:
        self._file.close()


class ParquetWriter:
    def __init__(self, path: Path) -> None:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise ConfigError(
                "Parquet needs pyarrow: pip install 'vitals-pipeline[export]' (or use --format csv)"
            ) from exc
        self._pa = pa
        self._schema = pa.schema(
            [
                ("subject", pa.string()),
                ("metric", pa.string()),
                ("t", pa.timestamp("us", tz="UTC")),
                ("value", pa.float64()),
                ("unit", pa.string()),
                ("source", pa.string()),
            ]
        )
        self._writer: Any = pq.ParquetWriter(str(path), self._schema, compression="zstd")

    def write(self, rows: Sequence[ExportRow]) -> None:
        columns = list(zip(*rows, strict=True))
        self._writer.write_table(self._pa.Table.from_arrays(columns, schema=self._schema))

    def close(self) -> None:
        self._writer.close()


def open_writer(fmt: str, path: Path) -> Writer:
    if fmt == "parquet":
        return ParquetWriter(path)
    return CsvWriter(path)
