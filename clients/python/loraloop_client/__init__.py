"""loraloop's Python SDK and `loraloop` CLI: not written yet.

This distribution is a placeholder so the layout and packaging are in place; it has no
functionality. Until the SDK lands, any OpenAI client works against the server's /v1 API.
"""

__version__ = "0.0.1"
