"""HTTP API (aiohttp): routes, request validation, error responses."""
