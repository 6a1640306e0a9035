"""Errors of the rules: what callers map to their own replies (a conflict, a missing
thing, a request the data contradicts)."""


class StoreError(Exception):
    """Something the store refused."""


class Conflict(StoreError):
    """A unique thing exists already."""


class NotFound(StoreError):
    """A referenced thing does not exist."""


class Invalid(StoreError):
    """The request contradicts the data (wrong kind, impossible transition)."""
