"""Names that come from data (class folders, file and archive-member names, a checkpoint's or an ONNX
file's class list) are data, not markup: one function per kind of output makes such a name safe to
print or write there. A name that is not valid UTF-8 (a Latin-1 folder name) is shown with its odd
bytes escaped (\\xe9) instead of crashing the writer."""

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()<>#+!|])")


def _printable(name):
    """Valid UTF-8 text, undecodable bytes (surrogate escapes from the file system) as \\xNN."""
    return str(name).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def for_console(name):
    """No control character reaches a terminal (escapes that clear the screen or set its title, a
    newline that splits a line): \\n, \\r, \\t, the others as \\xNN."""
    return _CONTROL.sub(lambda m: _NAMED.get(m.group(), f"\\x{ord(m.group()):02x}"), _printable(name))


def for_csv(name):
    """A cell a spreadsheet shows as text: control characters escaped, and one that starts like a
    formula gets a leading apostrophe (OWASP's advice against CSV injection)."""
    text = for_console(name)
    return "'" + text if str(name).startswith(_FORMULA_START) else text


def for_markdown(name):
    """Inline Markdown text: control characters escaped and every character that Markdown or HTML
    would read as markup (a table's |, a link's brackets, a tag's <) backslash-escaped."""
    return _MARKDOWN.sub(r"\\\1", for_console(name))
