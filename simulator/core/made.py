"""Segments the appliance makes itself, for both ends of a flow: its keepalive probes (an NLB
TLS listener's) and its RSTs at expiry (``on_expiry: rst_both``).

Each is addressed as the flow's packets are on that side (the client sees the server's
address as it named it, the server sees the public one) and carries the sequence number
its receiver expects, so the receiving kernel takes it: an RST outside the window would be
ignored, a probe one below the window is answered with an ACK (RFC 9293 3.10.7.4).
"""

from __future__ import annotations

from simulator.core.events import Side
from simulator.core.flows import Flow
from simulator.core.icmp import Transmit
from simulator.core.packets import ACK, RST, build_tcp

WINDOW = 64240


def keepalives_to_both(flow: Flow) -> list[Transmit]:
    """A probe to each end (seq one below what it expects), or none before both sides'
    sequence numbers are known."""
    from_client, from_server = flow.next_seq
    if from_client is None or from_server is None:
        return []
    client_ip, client_port = flow.client
    server_ip, server_port = flow.server
    real_ip, real_port = flow.outside[1], flow.outside[2]
    return [
        Transmit(Side.INSIDE, build_tcp(server_ip, server_port, client_ip, client_port,
                                        from_server - 1, from_client, ACK, WINDOW),
                 made=True),
        Transmit(Side.OUTSIDE, build_tcp(flow.public_ip, flow.public_port, real_ip, real_port,
                                         from_client - 1, from_server, ACK, WINDOW),
                 flow.port, made=True),
    ]


def resets_to_both(flow: Flow) -> list[Transmit]:
    """An RST to each end whose next sequence number is known, due at the flow's deadline."""
    out = []
    client_ip, client_port = flow.client
    server_ip, server_port = flow.server
    real_ip, real_port = flow.outside[1], flow.outside[2]
    to_client_seq, to_server_seq = flow.next_seq[1], flow.next_seq[0]
    if to_client_seq is not None:
        out.append(Transmit(Side.INSIDE, build_tcp(server_ip, server_port, client_ip,
                                                   client_port, to_client_seq, 0, RST),
                            deadline=flow.deadline, made=True))
    if to_server_seq is not None:
        out.append(Transmit(Side.OUTSIDE, build_tcp(flow.public_ip, flow.public_port, real_ip,
                                                    real_port, to_server_seq, 0, RST),
                            flow.port, flow.deadline, made=True))
    return out
