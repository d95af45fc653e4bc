"""Write a benchmark's table into bench/RESULTS.md between markers of its own, replacing an earlier
table of the same benchmark and device."""

from __future__ import annotations

import os


def update_section(path: str, key: str, lines: list[str]) -> None:
    begin, end = f"<!-- {key} begin -->", f"<!-- {key} end -->"
    block = "\n".join([begin, *lines, end])
    text = open(path).read() if os.path.exists(path) else "# Results\n"
    if begin in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(text)


def write_csv(path: str, rows: list[dict], keys: list[str] | None = None) -> None:
    keys = keys or list(rows[0])
    with open(path, "w") as f:
        f.write(",".join(keys) + "\n")
        for r in rows:
            f.write(",".join(str(r.get(k, "")) for k in keys) + "\n")
