"""What she is told while his position is not disclosed: his cell on a secret grid, never more.

The rule (``docs/disclosure.md``): in ``clear`` and ``notify``, and while a ``reveal``
or ``breach`` is not disclosed to her, everything she receives is a function of her
own position and of the *cell* of a grid that his latest fix falls in, never of his
position inside that cell. Cells are at least ``CELL_M`` (1 km) on each side, and
the grid is shifted by a secret per-offender offset, so its lines are not known to
her. Whoever controls her reported positions and accuracies, without limit and over
days, therefore learns at most which cell he is in: two positions of his in one cell
give her exactly the same answers (the property tests in ``tests/unit/test_coarse.py``
check this), so for any guess of hers some position consistent with all she saw is
at least half a cell's diagonal (707 m) away, and the stated bound is 500 m.

Doubt still counts toward danger: the tier she is told is decided on the *nearest
point* of his cell, widened by the most his accuracy can count (100 m), so she is
never told less than the exact rule would tell her; she may be told more (a cell's
far corner is up to 1.4 km from its nearest point).
"""

from __future__ import annotations

import hashlib
import hmac
import math

import numpy as np
import numpy.typing as npt

from bangpae.domain import geodesy
from bangpae.domain.model import ACCURACY_CAP_M

F64 = npt.NDArray[np.float64]

# Side of a cell, metres: rows and columns are never narrower than this.
CELL_M = 1000.0
# The stated bound: what she learns never places him closer than this (half a cell side).
BOUND_M = CELL_M / 2.0
# A row's height in degrees: 1 km over the shortest degree of latitude (at the equator).
_ROW_DEG = CELL_M / 110_574.0
# The distance she is told is rounded up to this step.
TOLD_STEP_M = 500.0


def grid_offset(key: bytes, offender_id: int) -> tuple[float, float]:
    """The secret shift of one offender's grid, in cells (row, column), from a server key.

    One offender has one grid for all his orders, so two protected people comparing
    what they were told learn no more than one of them.
    """
    digest = hmac.new(key, f"grid:{offender_id}".encode(), hashlib.sha256).digest()
    oy = int.from_bytes(digest[:8], "big") / 2.0**64
    ox = int.from_bytes(digest[8:16], "big") / 2.0**64
    return oy, ox


def cells(lat: F64, lon: F64, oy: F64, ox: F64) -> tuple[F64, F64, F64, F64]:
    """The cell each point falls in: (south, north, west, east) edges in degrees."""
    row = np.floor(lat / _ROW_DEG + oy)
    south = (row - oy) * _ROW_DEG
    north = south + _ROW_DEG
    # Columns are sized at the row's poleward edge, where a degree of longitude is shortest.
    edge = np.minimum(np.maximum(np.abs(south), np.abs(north)), 89.0)
    col_deg = CELL_M / (
        np.radians(1.0) * geodesy.prime_vertical_radius(edge) * np.cos(np.radians(edge))
    )
    col = np.floor(lon / col_deg + ox)
    west = (col - ox) * col_deg
    return south, north, west, west + col_deg


def distance_to_cell_m(lat: F64, lon: F64, south: F64, north: F64, west: F64, east: F64) -> F64:
    """Metres from each point to the nearest point of its cell (0 inside it)."""
    return geodesy.fast_distances_m(lat, lon, np.clip(lat, south, north), np.clip(lon, west, east))


def told_margins(
    her_lat: F64, her_lon: F64, her_acc_eff: F64, his_lat: F64, his_lon: F64, oy: F64, ox: F64
) -> F64:
    """The margin her told tier is decided on: distance to his cell less every doubt.

    His accuracy counts as the most it ever can (``ACCURACY_CAP_M``), so the margin does
    not move with it; hers (already capped) counts as reported: it is her own input.
    """
    s, n, w, e = cells(his_lat, his_lon, oy, ox)
    return distance_to_cell_m(her_lat, her_lon, s, n, w, e) - ACCURACY_CAP_M - her_acc_eff


def told_distance_m(margin_m: float, notify_radius_m: float) -> int:
    """The distance she is told in notify (or near him without disclosure): coarse.

    The margin rounded up to 500 m, at least 500 m and at most the notify radius.
    """
    step = math.ceil(max(margin_m, 0.0) / TOLD_STEP_M) * TOLD_STEP_M
    return int(min(max(step, TOLD_STEP_M), max(notify_radius_m, TOLD_STEP_M)))
