"""The scenario most tests share: where she lives and when the story starts.

Her home is Seoul City Hall; the clock starts at 2027-01-15T08:00:00Z (17:00 in
Seoul). A test that needs another place or time (a curfew at night, a zone's edge)
says so with its own constants.
"""

HOME = (37.5663, 126.9779)  # latitude, longitude (WGS84)
T0 = 1_800_000_000.0  # POSIX seconds
