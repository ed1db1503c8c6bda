"""natsim: a packet-level simulator of the cloud middleboxes that forget idle connections.

The pure engine lives in :mod:`simulator.core`; everything else is a thin I/O layer around it
(namespaces, AF_PACKET sockets, workloads, reports).
"""

__version__ = "0.1.0"
