"""The aiohttp application: JSON API, staff pages, health and metrics."""
