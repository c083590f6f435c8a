"""Outbound return-visit campaigns."""
