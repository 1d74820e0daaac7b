"""Kubernetes runners: a batch/v1 Job or a JobSet per run (see docs/jobs.md)."""
