"""Training jobs: the worker that runs queued jobs and the runners that start them."""
