"""Training jobs: ``run-job`` (one job, in its own process), the worker that launches them, and
the runners that start those processes (a local child process, or Kubernetes)."""
