"""Approach prediction: a breach of the keep-away distance foreseen before it happens.

From both parties' velocities the engine takes the speed at which they close on each
other; a breach predicted sooner than ``APPROACH_HORIZON_S`` raises ``approach_fast``
once, and the prediction re-arms when the breach is further off than
``APPROACH_REARM_S`` or the order is back below ``notify``.
"""

from __future__ import annotations

APPROACH_HORIZON_S = 120.0
APPROACH_REARM_S = 180.0
