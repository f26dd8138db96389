r"""Text from files and folders made safe to show on a terminal.

A file name is chosen by whoever made the file, and a terminal acts on some characters instead of
showing them: ``ESC ] 0 ; ... BEL`` sets the window title, ``ESC ] 52 ; c ; ...`` writes the
clipboard, ``ESC [ 2 J`` clears the screen, and a C1 control (U+009B is a one-character ``ESC [``)
does the same on some terminals. Unicode's bidirectional overrides reorder what is shown, so that
``evil\u202egnp.txt`` reads as ``eviltxt.png``. So every name, path, caption or engine message that
loratui prints or draws goes through :func:`escape_controls` first: each such character is written
the way Python writes it in a string (``\x1b``, ``\u202e``), visible and the same on every terminal,
and nothing else changes.

A name that is not UTF-8 reaches Python with each undecodable byte as a lone surrogate
(``os.fsdecode``: ``b"\xff"`` becomes ``"\udcff"``), which no UTF-8 terminal stream can even
encode; it is shown as the byte it stands for (``\xff``).

Commands to paste are quoted by :mod:`loratui.shell`, which writes such characters as their bytes
in bash's ``$'\x1b'`` form (so the command is both safe to show and exact to run); Textual's markup is a separate matter, for
the TUI's own helpers (a name is shown as plain text there, never parsed as markup).
"""

from __future__ import annotations

import re

# What a terminal may act on, or what changes how a line reads:
# C0 controls and DEL, C1 controls, the line and paragraph separators, the bidirectional marks,
# embeddings, overrides and isolates, and lone surrogates (undecodable bytes of a file name).
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
_SURROGATE_ESCAPED_BYTES = range(0xDC80, 0xDD00)  # os.fsdecode's stand-ins for the bytes 0x80..0xff


def escape_controls(text: str, keep: str = "") -> str:
    """``text`` with every character a terminal would act on written as a visible escape.

    ``keep``: characters to leave as they are (``"\\n"`` for text that is meant to span lines).
    """
    if not CONTROL_CHARACTERS.search(text):  # the usual case: nothing to do, no copy
        return text
    return CONTROL_CHARACTERS.sub(lambda match: _escaped(match.group(), keep), text)


def _escaped(char: str, keep: str) -> str:
    if char in keep:
        return char
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if code in _SURROGATE_ESCAPED_BYTES:
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def has_controls(text: str) -> bool:
    """Whether :func:`escape_controls` would change ``text``."""
    return CONTROL_CHARACTERS.search(text) is not None


def json_escaped(encoded: str) -> str:
    """A JSON text (``json.dumps(..., ensure_ascii=False)``) with the same characters written as
    ``\\uXXXX`` escapes; it decodes to the same value.

    ``json.dumps`` escapes C0 controls already, but not DEL, C1 controls, bidirectional marks or
    lone surrogates: those would reach a terminal that shows the file (``loratui logs --json``),
    and a lone surrogate (a file name that is not UTF-8) cannot be written as UTF-8 at all. Outside
    JSON strings none of them can occur, so replacing them anywhere in the text is exact.
    """
    if not CONTROL_CHARACTERS.search(encoded):
        return encoded
    return CONTROL_CHARACTERS.sub(lambda match: f"\\u{ord(match.group()):04x}", encoded)
