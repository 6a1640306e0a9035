"""Errors of the protocol decoders."""


class FrameError(ValueError):
    """A message that cannot be decoded or fails validation; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
