"""loraloop's server: the inference engine and the HTTP API around it."""
