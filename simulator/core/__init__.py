"""The pure core of natsim: packets in, actions and events out, time passed in by the caller.

Nothing in this package performs I/O or reads a clock; a unit test checks the imports. That is
what lets every appliance rule be tested in milliseconds with a :class:`ManualClock` and
synthetic packets, without root and without sleeping 350 seconds.
"""
