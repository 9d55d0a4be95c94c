"""The conversation engine: flows, content, texts and matching. Knows no chat platform."""
