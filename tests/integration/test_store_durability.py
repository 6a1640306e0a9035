"""What the store acknowledged is on disk: a writer killed with SIGKILL loses none of it."""

from __future__ import annotations

import signal
import subprocess
import sys

from bangpae.adapters.store import Store
from tests.integration.conftest import make_case

WRITER = r"""
import sys
from bangpae.adapters.store import Store
from bangpae.domain.model import Fix
s = Store(sys.argv[1])
dev = int(sys.argv[2])
for i in range(1_000_000):
    ids = s.append_fixes([Fix(dev, 1000.0 + 3 * i + k, 37.5, 127.0, 5.0) for k in range(3)])
    print(*ids, flush=True)  # acknowledged only after append_fixes has returned
"""


def test_every_acknowledged_fix_survives_kill_9(database_url: str) -> None:
    s = Store(database_url)
    s.migrate()
    case = make_case(s)
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, database_url, str(case.ankle)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    acked = [int(x) for _ in range(300) for x in proc.stdout.readline().split()]
    proc.send_signal(signal.SIGKILL)  # mid-stream: the writer is inside its loop
    proc.wait()
    acked += [int(x) for x in proc.stdout.read().split()]
    assert proc.returncode == -signal.SIGKILL and len(acked) >= 900
    stored = {x.id for x in s.fixes_for_device(case.ankle, limit=10_000_000)}
    assert set(acked) <= stored
    # Reopening after the crash (SQLite recovers its WAL) sees the same fixes.
    s.close()
    again = Store(database_url)
    assert again.count_fixes() == len(stored)
    again.close()
