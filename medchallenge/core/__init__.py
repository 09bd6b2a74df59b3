"""Shared machinery for every challenge. Nothing here imports a challenge package."""
