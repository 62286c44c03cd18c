"""Benchmarks of the job engine against peer queues, the limiter, Slack ingress, Redis memory and group cost."""
