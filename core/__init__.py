"""loraloop's shared foundation: settings, artifact registry, model and adapter loading, store."""
