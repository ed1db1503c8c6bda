"""The front ends: the ``natsim`` command line and the pytest plugin."""
