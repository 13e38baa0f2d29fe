"""Workloads that run as pods: the echo target. Imports nothing else from this repository."""
