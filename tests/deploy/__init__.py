"""Deployment recipes, run for real: nginx in front, several processes on one port."""
