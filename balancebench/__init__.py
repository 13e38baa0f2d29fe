"""balancebench: measure how Kubernetes Service load balancing spreads kept-alive HTTP traffic over pods."""

__version__ = "0.1.0"
