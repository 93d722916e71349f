"""Shared shapes of the head node, no aiohttp: records, the record store, validation,
the root error, and the tracked-source machinery both sessions and jobs use."""
