"""The jobs API: queue, follow and cancel training jobs."""
