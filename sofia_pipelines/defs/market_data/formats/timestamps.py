"""Times as files write them -> naive UTC `Datetime("ms")`, refusing what cannot be told apart.

Epoch numbers come in seconds, milliseconds, microseconds or nanoseconds; the unit is told by magnitude,
once per file: every unit's plausible span (1990 … 2100) is three decades away from the next one, so a
value that sits between two spans, or a column whose values fall in two spans, is refused, naming the row.
Strings are ISO 8601 with or without a zone (no zone means UTC), or epoch digits.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from sofia_runtime.schemas import SchemaError

# epoch value of 1990-01-01 and 2100-01-01 in each unit
_LOW, _HIGH = 631_152_000, 4_102_444_800
UNITS = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}


def epoch_unit(value: float) -> str | None:
    """The unit an epoch value is plausible in, None when it is plausible in none."""
    for unit, scale in UNITS.items():
        if _LOW * scale <= value <= _HIGH * scale:
            return unit
    return None


@dataclass
class TimeParser:
    """Parses one file's time column batch by batch; the epoch unit found in the first batch holds for the file."""

    origin: str
    unit: str | None = None

    def parse(self, values: pl.Series, field_name: str, row_offset: int) -> pl.Series:
        """`values` -> Datetime("ms"); `row_offset` is the 1-based file row of values[0]."""
        if isinstance(values.dtype, pl.Datetime):
            out = values.dt.convert_time_zone("UTC").dt.replace_time_zone(None) if values.dtype.time_zone else values
            return self._no_nulls(out.dt.cast_time_unit("ms"), values, field_name, row_offset)
        if values.dtype == pl.Date:
            return values.cast(pl.Datetime("ms"))
        if values.dtype.is_integer():
            return self._epoch(values.cast(pl.Float64), values, field_name, row_offset, values.cast(pl.Int64))
        if values.dtype.is_numeric():
            return self._epoch(values.cast(pl.Float64), values, field_name, row_offset)
        text = values.cast(pl.Utf8).str.strip_chars()
        digits = text.str.contains(r"^\d+(\.\d+)?$")
        if digits.all():
            whole = text.str.contains(r"^\d{1,18}$").all()
            return self._epoch(text.cast(pl.Float64), values, field_name, row_offset,
                               text.cast(pl.Int64) if whole else None)
        if digits.any():
            row = int(digits.arg_true()[0])
            raise SchemaError(self.origin, f"epoch number {values[row]!r} among ISO dates: one format per column",
                              row=row + row_offset, field=field_name)
        out = pl.DataFrame({"t": text}).select(_iso_utc(pl.col("t"))).to_series().alias(values.name)
        return self._no_nulls(out, values, field_name, row_offset)

    def _epoch(self, numbers: pl.Series, values: pl.Series, field_name: str, row_offset: int,
               integers: pl.Series | None = None) -> pl.Series:
        self._no_nulls(numbers, values, field_name, row_offset)
        if not numbers.len():
            return pl.Series(values.name, [], dtype=pl.Datetime("ms"))
        units = _units(numbers)
        unit = self.unit or units[0]
        bad = units != unit
        if unit == "?" or bad.any():
            row = 0 if unit == "?" else int(bad.arg_true()[0])
            found = epoch_unit(float(numbers[row]))
            why = (f"in {found} while the file's times are in {unit}" if found and unit != "?" else
                   "is not an epoch time in s, ms, µs or ns between 1990 and 2100")
            raise SchemaError(self.origin, f"time {values[row]!r} {why}", row=row + row_offset, field=field_name)
        self.unit = unit
        scale = UNITS[unit]
        # float seconds (1637193600.017) round to their milliseconds; µs and ns drop what is below a millisecond,
        # exactly when they are integers (a float holds ns epochs only to ~256 ns)
        if integers is not None:
            ms = integers * (1000 // scale) if scale <= 1000 else integers // (scale // 1000)
        else:
            scaled = numbers * (1000 / scale)
            ms = (scaled.round(0) if scale <= 1000 else scaled.floor()).cast(pl.Int64)
        return ms.cast(pl.Datetime("ms")).alias(values.name)

    def _no_nulls(self, out: pl.Series, values: pl.Series, field_name: str, row_offset: int) -> pl.Series:
        bad = out.is_null()
        if bad.any():
            row = int(bad.arg_true()[0])
            raise SchemaError(self.origin, f"cannot read {values[row]!r} as a time", row=row + row_offset,
                              field=field_name)
        return out


def _units(numbers: pl.Series) -> pl.Series:
    expr = pl.lit("?")
    for unit, scale in reversed(UNITS.items()):
        expr = pl.when(pl.col("v").is_between(_LOW * scale, _HIGH * scale)).then(pl.lit(unit)).otherwise(expr)
    return pl.DataFrame({"v": numbers}).select(expr.alias("u"))["u"]


_ISO = (r"^(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}:\d{2})(:\d{2}(?:\.\d+)?)?)?\s*(Z|[+-]\d{2}:?\d{2})?$")


def _iso_utc(text: pl.Expr) -> pl.Expr:
    """ISO 8601 text -> naive UTC; the zone (Z, +02:00, -0500, none = UTC) is taken apart from the local time
    so that rows with and without one parse alike."""
    day, hm = text.str.extract(_ISO, 1), text.str.extract(_ISO, 2).fill_null("00:00")
    sec, zone = text.str.extract(_ISO, 3).fill_null(":00"), text.str.extract(_ISO, 4)
    local = (day + " " + hm + sec).str.to_datetime("%Y-%m-%d %H:%M:%S%.f", strict=False, time_unit="ms")
    digits = zone.str.replace(":", "").str.slice(1)
    minutes = (digits.str.slice(0, 2).cast(pl.Int64, strict=False) * 60
               + digits.str.slice(2, 2).cast(pl.Int64, strict=False)).fill_null(0)
    return local - pl.duration(minutes=pl.when(zone.str.starts_with("-")).then(-minutes).otherwise(minutes))
