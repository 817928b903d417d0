"""Hostile peers, faults and load: what a server on the open internet meets."""
