"""A run is the world driver plus a script and a verdict: scenario runs and the matrix."""
