"""``python -m bangpae.cli``: the ``bangpae`` command."""

from bangpae.cli import main

raise SystemExit(main())
