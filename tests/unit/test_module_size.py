"""No module of the package grows past 600 lines: a room that big has several jobs, and
the next one added to it would hide among them (docs/architecture.md)."""

from __future__ import annotations

from pathlib import Path

import bangpae

LIMIT = 600


def test_every_module_is_at_most_600_lines() -> None:
    root = Path(bangpae.__file__).parent
    sizes = {
        str(p.relative_to(root)): len(p.read_text(encoding="utf-8").splitlines())
        for p in root.rglob("*.py")
    }
    assert len(sizes) > 100
    assert {name: n for name, n in sizes.items() if n > LIMIT} == {}
