"""Reading uploaded files into polars, with a specific error for every way they go wrong."""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import polars as pl

from lepton_core.errors import InvalidArgument, disk_full
from lepton_core.names import shown

FORMATS = ("csv", "parquet", "jsonl", "arrow")
SNIFF_BYTES = 64 * 1024
DELIMITERS = ",;\t|"
ARROW_FILE_MAGIC = b"ARROW1"
#: How a codec name is spelt (``utf-8``, ``latin-1``, ``cp1252``, ``iso8859_15``): checked before
#: :func:`codecs.lookup`, which raises ValueError on a NUL and accepts any length.
ENCODING_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,39}")


@dataclass(frozen=True)
class CsvOptions:
    """How to read a CSV; empty values mean 'detect' or the default."""

    delimiter: str = ""
    has_header: bool = True
    encoding: str = "utf-8"
    quote_char: str = '"'

    def canonical(self) -> str:
        """A stable text of the options, part of a version's content address."""
        return f"d={self.delimiter!r};h={self.has_header};e={self.encoding};q={self.quote_char!r}"


@dataclass(frozen=True)
class Limits:
    max_rows: int
    max_columns: int


def _one_char(value: str) -> bool:
    """One printable ASCII character or a tab: a delimiter or quote polars and ``csv`` both take."""
    return len(value) == 1 and (value == "\t" or " " <= value <= "~")


def check_encoding(encoding: str, field: str = "header.csv.encoding") -> str:
    """``encoding`` if it names a text codec Python knows (``utf-8``, ``latin-1``, ...)."""
    if not ENCODING_RE.fullmatch(encoding):
        raise InvalidArgument(
            f"unknown encoding {shown(encoding)}: expected a codec name such as utf-8, latin-1 or cp1252", field=field
        )
    try:
        codecs.lookup(encoding)
        "a".encode(encoding)  # refuses bytes-to-bytes codecs (hex, base64, zlib): not text encodings
    except (LookupError, ValueError):
        raise InvalidArgument(
            f"unknown encoding {shown(encoding)}: expected a text codec such as utf-8, latin-1 or cp1252", field=field
        ) from None
    return encoding


def check_options(fmt: str, opts: CsvOptions) -> None:
    if fmt not in FORMATS:
        raise InvalidArgument(
            f"format {shown(fmt)} is not supported; use one of {', '.join(FORMATS)}", field="header.format"
        )
    if opts.delimiter and not _one_char(opts.delimiter):
        raise InvalidArgument(
            f"the delimiter must be one printable ASCII character or a tab, got {shown(opts.delimiter)}",
            field="header.csv.delimiter",
        )
    if not _one_char(opts.quote_char):
        raise InvalidArgument(
            f"the quote must be one printable ASCII character, got {shown(opts.quote_char)}",
            field="header.csv.quote_char",
        )
    if opts.delimiter and opts.delimiter == opts.quote_char:
        raise InvalidArgument(f"the delimiter and the quote are both {opts.delimiter!r}", field="header.csv.quote_char")
    check_encoding(opts.encoding)


def _utf8_text(path: Path, encoding: str) -> Path:
    """The file as UTF-8 (polars reads only UTF-8); re-encoded next to it when needed."""
    if codecs.lookup(encoding).name == "utf-8":
        decoder = codecs.getincrementaldecoder("utf-8")()
        offset = 0
        with path.open("rb") as f:
            # The last empty block with final=True catches a sequence cut off at the end.
            for block, final in _blocks(f):
                try:
                    decoder.decode(block, final)
                except UnicodeDecodeError as exc:
                    raise InvalidArgument(
                        f"the file is not valid UTF-8 (bad byte at offset {offset + exc.start}); "
                        "if it is another encoding, say which (e.g. latin-1)",
                        field="chunk",
                    ) from exc
                offset += len(block)
        return path
    out = path.with_suffix(".utf8")
    try:
        with path.open("r", encoding=encoding, newline="") as src, out.open("w", encoding="utf-8", newline="") as dst:
            while text := src.read(1 << 20):
                dst.write(text)
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"the file is not valid {encoding}: {exc.reason}", field="chunk") from exc
    return out


def _blocks(f: BinaryIO) -> Iterator[tuple[bytes, bool]]:
    while block := f.read(1 << 20):
        yield block, False
    yield b"", True


def _sniff(sample: str) -> str:
    try:
        return csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        return ","


def read_csv(path: Path, opts: CsvOptions) -> pl.DataFrame:
    utf8 = codecs.lookup(opts.encoding).name == "utf-8"
    # UTF-8 files go straight to polars, which validates as it parses; the byte-exact
    # check (which says where the file breaks) runs only when polars refuses the file.
    text_path = path if utf8 else _utf8_text(path, opts.encoding)
    with text_path.open("rb") as raw:
        head = raw.read(SNIFF_BYTES)
    sample = head.decode("utf-8", errors="ignore")
    if not sample.strip():
        raise InvalidArgument("the file is empty", field="chunk")
    if "\x00" in sample:
        raise InvalidArgument("the file holds NUL bytes: it is binary, not CSV", field="chunk")
    delimiter = opts.delimiter or _sniff(sample)
    if opts.has_header:
        # polars renames repeated header names silently; a repeated name is an error here.
        try:
            header = next(csv.reader(io.StringIO(sample), delimiter=delimiter, quotechar=opts.quote_char), [])
        except csv.Error as exc:
            raise InvalidArgument(f"the CSV could not be parsed: {exc}", field="chunk") from exc
        repeated = sorted({name for name in header if header.count(name) > 1})
        if repeated:
            raise InvalidArgument(f"duplicate column names: {', '.join(repeated)}", field="chunk")
    try:
        return pl.read_csv(
            text_path,
            separator=delimiter,
            has_header=opts.has_header,
            quote_char=opts.quote_char,
            infer_schema_length=10_000,
        )
    except (pl.exceptions.PolarsError, ValueError, OSError) as exc:
        if disk_full(exc):
            raise  # the service's disk, not the user's CSV
        if utf8:
            _utf8_text(path, opts.encoding)  # raises the precise error when the bytes are not UTF-8
        raise InvalidArgument(f"the CSV could not be parsed: {str(exc).splitlines()[0]}", field="chunk") from exc


def read_file(path: Path, fmt: str, opts: CsvOptions) -> pl.DataFrame:
    """Parses an uploaded file; every failure is an :class:`InvalidArgument` saying why."""
    if path.stat().st_size == 0:
        raise InvalidArgument("the file is empty", field="chunk")
    if fmt == "csv":
        return read_csv(path, opts)
    try:
        if fmt == "parquet":
            return pl.read_parquet(path)
        if fmt == "jsonl":
            return pl.read_ndjson(path)
        with path.open("rb") as f:
            magic = f.read(len(ARROW_FILE_MAGIC))
        return pl.read_ipc(path) if magic == ARROW_FILE_MAGIC else pl.read_ipc_stream(path)
    except (pl.exceptions.PolarsError, ValueError, OSError) as exc:
        if disk_full(exc):
            raise  # the service's disk, not the user's file
        raise InvalidArgument(
            f"the file is not valid {fmt}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
            field="chunk",
        ) from exc
    except Exception as exc:
        raise InvalidArgument(f"the file is not valid {fmt}: {type(exc).__name__}", field="chunk") from exc


def _path_like(name: str) -> bool:
    """A name that could walk a filesystem (``../x``, ``/etc``, ``~``) or hide control bytes.

    A slash inside a label (``od280/od315``, in scikit-learn's wine data) is fine.
    """
    parts = re.split(r"[/\\]", name)
    return name.startswith(("/", "\\", "~")) or any(p in (".", "..") for p in parts) or any(ord(ch) < 32 for ch in name)


def check_frame(df: pl.DataFrame, limits: Limits) -> None:
    """Refuses frames a dataset must not hold: too big, no rows, bad names, NaN/Inf."""
    if df.width > limits.max_columns:
        raise InvalidArgument(f"{df.width} columns; at most {limits.max_columns} are allowed", field="chunk")
    if df.height == 0:
        raise InvalidArgument("the file has a header but no data rows", field="chunk")
    if df.height > limits.max_rows:
        raise InvalidArgument(f"{df.height} rows; at most {limits.max_rows} are allowed", field="chunk")
    for name in df.columns:
        if not name.strip() or _path_like(name):
            raise InvalidArgument(f"column name {name!r} is empty or path-like", field="chunk")
    floats = [n for n, t in df.schema.items() if t.is_float()]
    if floats:
        bad = df.select([(pl.col(n).is_nan() | pl.col(n).is_infinite()).fill_null(False).alias(n) for n in floats])
        counts = {n: int(bad[n].sum()) for n in floats}
        offenders = {n: c for n, c in counts.items() if c}
        if offenders:
            name = next(iter(offenders))
            rows = bad.with_row_index("_row").filter(pl.col(name))["_row"].head(5).to_list()
            listed = ", ".join(f"{n} ({c})" for n, c in offenders.items())
            raise InvalidArgument(
                f"NaN or infinite values in {listed}; first rows of {name}: {rows}. Leave missing values empty instead",
                field="chunk",
            )
