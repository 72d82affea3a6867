"""Example rlfleet plugin package (an env and an algorithm registered through entry points)."""
