"""bangpae (방패): real-time protection for stalking and domestic-violence protective orders."""

__version__ = "0.1.0"
