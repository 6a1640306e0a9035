"""The API's routes, one module per resource; the factory includes each module's ``router``."""
