"""Locust users, client connection-pool policies and load shapes. Knows nothing of clusters."""
