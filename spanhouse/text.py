"""Text as UTF-8 can carry it: shared by the SDK (span names, statuses, captured values)
and the collector (error messages quoting what a client sent)."""

from __future__ import annotations


def utf8_safe(text: str) -> str:
    """``text`` with each lone surrogate written as its escape (``\\udcff``): how Python
    decodes a byte of a non-UTF-8 file name (``os.listdir``, ``open``'s errors), and
    what ``json.loads`` makes of a ``"\\ud800"`` escape. UTF-8 cannot carry one: the OTLP
    encoder raised on a span's name or status holding one (losing the whole batch) or
    dropped the attribute, and a protobuf message refuses one."""
    if text.isascii():  # most text, told without reading it
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text
