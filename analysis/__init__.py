"""Records → metrics → comparison reports. Imports nothing else from this repository."""
