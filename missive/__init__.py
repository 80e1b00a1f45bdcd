"""Missive: a self-hostable server for the Messages and Workflows APIs."""

__version__ = "0.1.0"
