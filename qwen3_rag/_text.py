"""Bytes of a user's file to text, as every reader here decodes them (the ``qwen3-rag`` CLI's loaders and the Ray
corpus job): a byte-order mark chooses UTF-8, UTF-16 or UTF-32; without one the bytes must be UTF-8 and hold no
NUL in the first 8 KiB (a binary file). Nothing is ever decoded with replacement characters."""

from __future__ import annotations

import codecs

_BOMS = (  # UTF-32-LE's mark starts with UTF-16-LE's: test the longer ones first
    (codecs.BOM_UTF32_LE, "utf-32-le", "UTF-32"),
    (codecs.BOM_UTF32_BE, "utf-32-be", "UTF-32"),
    (codecs.BOM_UTF8, "utf-8", "UTF-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16"),
)


class UndecodableText(ValueError):
    """Bytes that are not text this package reads; the message is the reason (``binary file``, ``not UTF-8 text
    (byte 3)``, ...)."""


def decode_text(data: bytes) -> str:
    """Text from bytes (see the module docstring), or :class:`UndecodableText` saying why not."""
    for bom, codec, name in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom) :].decode(codec)
            except UnicodeDecodeError as exc:
                reason = f"not {name} text despite its byte-order mark (byte {exc.start + len(bom)})"
                raise UndecodableText(reason) from exc
    if b"\x00" in data[:8192]:
        raise UndecodableText("binary file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UndecodableText(f"not UTF-8 text (byte {exc.start})") from exc


def normalise_newlines(text: str) -> str:
    """``\\r\\n`` and ``\\r`` as ``\\n``, so that line numbers match the file's."""
    return text.replace("\r\n", "\n").replace("\r", "\n")
