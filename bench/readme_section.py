"""Replace one generated section of bench/README.md, shared by the benchmarks.

A section sits between a begin and an end marker (HTML comments); it is
replaced in place, or appended when the README has none yet.
"""

from __future__ import annotations


def write_section(path: str, begin: str, end: str, text: str) -> None:
    with open(path, encoding="utf-8") as handle:
        content = handle.read()
    block = f"{begin}\n{text}{end}"
    if begin in content and end in content:
        head, rest = content.split(begin, 1)
        content = head + block + rest.split(end, 1)[1]
    else:
        content = content.rstrip("\n") + "\n\n" + block + "\n"
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(content)
