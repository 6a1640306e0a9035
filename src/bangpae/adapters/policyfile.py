"""The access policy file: TOML, shipped as the default, overridable by path.

Read with :mod:`tomllib`; what it says is judged by :func:`bangpae.domain.access.parse_policy`
(see ``docs/access-policy.md``). A file that cannot be read, is not TOML, or names
anything unknown is refused with a message naming the file and the key.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from bangpae.domain.access import Policy, PolicyError, parse_policy

DEFAULT_POLICY = Path(__file__).with_name("access-policy.toml")


class PolicyFileError(Exception):
    """The access policy file cannot be used; the message says why and where."""


def load_policy(path: Path | None = None) -> Policy:
    """The policy in ``path`` (default: the one shipped with the package), validated."""
    where = path or DEFAULT_POLICY
    try:
        with open(where, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise PolicyFileError(f"access policy {where}: cannot read it: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PolicyFileError(f"access policy {where}: not valid TOML: {exc}") from None
    try:
        return parse_policy(data)
    except PolicyError as exc:
        raise PolicyFileError(f"access policy {where}: {exc}") from None
