"""Native-format answers in the layout of a client's protocol revision.

Why: over HTTP, ClickHouse's Go driver (clickhouse-go >= 2.37, so Grafana's ClickHouse
data source) sends ``client_protocol_version`` and reads each Native block as a server
writes it for that revision: a block header before the columns and, from revision
54454 on, a "custom serialization" byte after each column's type. The embedded engine
writes the plain layout (revision 0) whatever the request said, and the driver misreads
it from its first query on. So the SQL endpoint rewrites the engine's answer: it walks
the blocks and columns, finding where each column's data ends from its type, and copies
the bytes with the header and the byte (always 0: the engine writes no sparse or other
custom serialization here) put in. Column data itself is copied unchanged.

Types are parsed by clickhouse-connect's registry; the few whose Native data has no
fixed structure here (Dynamic, JSON, Variant, AggregateFunction states, ...) are refused
with a message saying to cast them to String.
"""

from __future__ import annotations

from clickhouse_connect.datatypes.base import ClickHouseType
from clickhouse_connect.datatypes.registry import get_from_name

CUSTOM_SERIALIZATION_REVISION = 54454
"""DBMS_MIN_REVISION_WITH_CUSTOM_SERIALIZATION (ClickHouse src/Core/ProtocolDefines.h)."""

BLOCK_INFO = bytes([1, 0, 2, 0xFF, 0xFF, 0xFF, 0xFF, 0])
"""BlockInfo as a server writes it: field 1 is_overflows = false, field 2 bucket_num = -1, end."""

_POINT_BYTES = 16  # Tuple(Float64, Float64)
_GEO_ARRAYS = {"Ring": "Point", "LineString": "Point", "Polygon": "Ring", "MultiLineString": "LineString",
               "MultiPolygon": "Polygon"}
_LC_INDEX_BYTES = (1, 2, 4, 8)
_LC_HAS_ADDITIONAL_KEYS = 1 << 9


class UnsupportedNativeType(ValueError):
    """A result column whose Native layout this module cannot walk."""


def for_revision(data: bytes, revision: int) -> bytes:
    """``data`` (Native blocks as the engine wrote them) laid out for ``revision``."""
    if revision <= 0:
        return data
    reader = _Reader(data)
    out = bytearray()
    while reader.pos < len(data):
        out += BLOCK_INFO
        start = reader.pos
        columns, rows = reader.varint(), reader.varint()
        out += data[start:reader.pos]
        for _ in range(columns):
            start = reader.pos
            reader.skip(reader.varint())  # name
            type_name = _type_name(reader.take(reader.varint()))
            out += data[start:reader.pos]
            if revision >= CUSTOM_SERIALIZATION_REVISION:
                out.append(0)
            start = reader.pos
            if rows:
                ch_type = _parse(type_name)
                _skip_prefix(reader, ch_type)
                _skip_data(reader, ch_type, rows)
            out += data[start:reader.pos]
    return bytes(out)


class _Reader:
    """A position in a bytes object, reading the few primitives Native data is made of."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError("Native data ends inside a column")
        self.pos += n
        return self.data[self.pos - n:self.pos]

    def skip(self, n: int) -> None:
        self.take(n)

    def varint(self) -> int:
        value = shift = 0
        while True:
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7

    def uint64(self) -> int:
        return int.from_bytes(self.take(8), "little")


def _type_name(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:  # output_format_native_encode_types_in_binary_format
        raise UnsupportedNativeType("cannot lay out Native data whose types are binary-encoded for this client; "
                                    "leave output_format_native_encode_types_in_binary_format off") from None


def _parse(name: str) -> ClickHouseType:
    try:
        return get_from_name(name)
    except Exception as exc:  # the registry raises plain Exceptions for unknown names
        raise UnsupportedNativeType(f"cannot send a column of type {name} in Native format to this client; "
                                    "cast it to String") from exc


def _inner(ch_type: ClickHouseType, wrapper: str) -> ClickHouseType:
    """The type inside ``wrapper(...)`` (LowCardinality, Nullable) of ``ch_type``'s name."""
    name = ch_type.name
    if not name.startswith(wrapper + "("):
        return ch_type
    return _parse(name[len(wrapper) + 1:-1])


def _children(ch_type: ClickHouseType) -> list[ClickHouseType]:
    """Nested types whose state prefixes and data follow the parent's, in order."""
    base = ch_type.base_type
    if base in _GEO_ARRAYS:
        return [_parse(_GEO_ARRAYS[base])]
    if base == "Map":
        return [ch_type.key_type, ch_type.value_type]
    if base in ("Array", "SimpleAggregateFunction"):
        return [ch_type.element_type]
    if base == "Tuple":
        return list(ch_type.element_types)
    return []


def _skip_prefix(reader: _Reader, ch_type: ClickHouseType) -> None:
    """The serialization state prefix: only LowCardinality has one (its keys version)."""
    if ch_type.low_card:
        reader.uint64()
        return
    for child in _children(ch_type):
        _skip_prefix(reader, child)


def _skip_data(reader: _Reader, ch_type: ClickHouseType, rows: int) -> None:
    if rows == 0:
        return
    if ch_type.low_card:
        flags = reader.uint64()
        if flags & _LC_HAS_ADDITIONAL_KEYS:
            keys = reader.uint64()
            _skip_data(reader, _inner(_inner(ch_type, "LowCardinality"), "Nullable"), keys)
        reader.skip(reader.uint64() * _LC_INDEX_BYTES[flags & 0xFF])
        return
    if ch_type.nullable:
        reader.skip(rows)  # the null map
        ch_type = _inner(ch_type, "Nullable")
    base = ch_type.base_type
    if base == "String":
        for _ in range(rows):
            reader.skip(reader.varint())
    elif base in ("Array", "Map") or base in _GEO_ARRAYS:
        reader.skip(8 * (rows - 1))
        total = reader.uint64()  # offsets are cumulative: the last is the element count
        for child in _children(ch_type):
            _skip_data(reader, child, total)
    elif base in ("Tuple", "SimpleAggregateFunction") and _children(ch_type):  # an empty Tuple() is laid out apart
        for child in _children(ch_type):
            _skip_data(reader, child, rows)
    elif base == "Point":
        reader.skip(_POINT_BYTES * rows)
    elif ch_type.byte_size > 0 and base != "QBit":  # fixed width (QBit's is not per row)
        reader.skip(ch_type.byte_size * rows)
    else:
        raise UnsupportedNativeType(f"cannot send a column of type {ch_type.name} in Native format to this "
                                    "client; cast it to String")
