"""Channel adapters: each turns a platform's updates into engine events and renders the
engine's messages back. Only `telegram.py` imports python-telegram-bot."""
