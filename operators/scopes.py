"""The live counters' scope key: ``campaign|channel``, escaped so that no two pairs share a key (pure).

``scope_key("c|x", "web")`` and ``scope_key("c", "x|web")`` used to be the same string ``c|x|web``: their
counters were summed into one. Now ``\\`` and ``|`` inside a part are escaped with a backslash
(``c\\|x|web`` vs ``c|x\\|web``); a part without either is written as it is, so every existing key keeps
its name. ``split_scope`` is the inverse. The job builds the same key in SQL (``scope_key_sql``).
"""

from __future__ import annotations

ALL = "all"


def _escape(part: str) -> str:
    if "\\" not in part and "|" not in part:
        return part
    return part.replace("\\", "\\\\").replace("|", "\\|")


def scope_key(campaign: str, channel: str) -> str:
    return f"{_escape(campaign)}|{_escape(channel)}"


def split_scope(key: str) -> tuple[str, str]:
    """The (campaign, channel) of a key made by :func:`scope_key`; ``ValueError`` for anything else."""
    parts: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(key):
        c = key[i]
        if c == "\\" and i + 1 < len(key):
            cur.append(key[i + 1])
            i += 2
            continue
        if c == "|":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur))
    if len(parts) != 2:
        raise ValueError(f"not a campaign|channel scope key: {key!r}")
    return parts[0], parts[1]


def scope_key_sql(campaign: str, channel: str) -> str:
    """The SQL expression of :func:`scope_key` over two STRING columns (REPLACE is cheap on short text)."""
    def esc(col: str) -> str:
        return f"REPLACE(REPLACE({col}, '\\', '\\\\'), '|', '\\|')"

    return f"CONCAT({esc(campaign)}, '|', {esc(channel)})"
