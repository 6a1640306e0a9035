"""The data directory is its user's alone: the directory 0700, every file in it 0600.

It holds the database (names, phone numbers sealed, every position), the keys that
open it and sign the audit chain, and the tokens' signing key. Files bangpae makes are
created with these modes, whatever the umask of the process that makes them; and
``bangpae serve`` refuses a directory or file that other users of the machine could
read, rather than tighten it quietly: the operator learns that the data were exposed
and fixes the modes, and whatever set them (docs/robustness.md).
"""

from __future__ import annotations

import os
import shlex
import stat
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy.engine import URL, make_url

PRIVATE_UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600


def private_umask() -> None:
    """From now on, what this process creates is readable by its own user alone."""
    os.umask(PRIVATE_UMASK)


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) mode 0700; an existing one is left as it is."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)


def create_private_file(path: Path) -> bool:
    """Create ``path`` empty with mode 0600 unless it exists; whether it was made."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def sqlite_file(url: str | URL) -> Path | None:
    """The file an SQLite URL names (None: another database, or one in memory)."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or u.database in (None, "", ":memory:"):
        return None
    if u.query.get("mode") == "memory" or u.database.startswith("file:"):
        return None  # a URI filename: SQLite's own business
    return Path(u.database)


def sqlite_files(url: str) -> list[Path]:
    """The database file of an SQLite URL and the journal, WAL and shared-memory files
    beside it (none for another database)."""
    db = sqlite_file(url)
    if db is None:
        return []
    return [db, *(db.with_name(db.name + s) for s in ("-journal", "-wal", "-shm"))]


def loose_modes(data_dir: Path, also: Iterable[Path] = ()) -> list[tuple[Path, int]]:
    """The directories and files under ``data_dir`` (and the files ``also``) that group
    or others may use, each with its mode; symbolic links are judged by their target."""
    out: list[tuple[Path, int]] = []

    def check(path: Path) -> None:
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:  # gone since it was listed, or a dangling link
            return
        if mode & 0o077:
            out.append((path, mode))

    if data_dir.is_dir():
        for root, dirs, files in os.walk(data_dir):
            check(Path(root))
            for name in sorted(files):
                check(Path(root) / name)
            dirs.sort()
    inside = data_dir.resolve()
    for path in also:  # the database may live elsewhere
        if path.exists() and inside not in path.resolve().parents:
            check(path)
    return out


def refusal(data_dir: Path, loose: list[tuple[Path, int]]) -> str:
    """Why ``bangpae serve`` will not start on these modes, and the commands that fix them."""
    dirs = [p for p, _ in loose if p.is_dir()]
    files = [p for p, _ in loose if not p.is_dir()]
    lines = [
        f"refusing to start: other users of this machine could read or change what "
        f"{data_dir} holds (the database, its keys):"
    ]
    for path, mode in loose:
        what = "directory" if path.is_dir() else "file"
        want = DIR_MODE if path.is_dir() else FILE_MODE
        lines.append(f"  {what} {path} is mode {mode:04o}, must be {want:04o}")
    lines.append("Fix it with:")
    if dirs:
        lines.append("  chmod 700 " + " ".join(shlex.quote(str(p)) for p in dirs))
    if files:
        lines.append("  chmod 600 " + " ".join(shlex.quote(str(p)) for p in files))
    return "\n".join(lines)
