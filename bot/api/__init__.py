"""The staff HTTP API (aiohttp): campaigns, with a bearer token per staff member.
Described in bot/api/openapi.yaml."""
