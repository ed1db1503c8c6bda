"""The idle-pool story's narration (``natsim demo --story idle-pool``): what each step of a
pooled connection reused after 400 s idle means, told from the runs' own events.

The sentences depend on which request and which attempt an event belongs to (the scripted
client reports both), and a silent appliance's drops are counted: the first drop is the
request, each later one a retransmission by the client's kernel, whose waits double. So a
:class:`PoolNarrator` keeps a little state per column and must see each column's events in
model-time order, as the demo gives them.
"""

from __future__ import annotations

from collections.abc import Mapping

from simulator.core.jsonvalue import Json

RESET_POOL, SILENT_POOL, KEPT_POOL = "nat-gw-idle-pool", "gwlb-idle-pool", \
    "nat-gw-idle-pool-keepalive"
COLUMNS = (RESET_POOL, SILENT_POOL, KEPT_POOL)
HEADINGS = {RESET_POOL: f"NAT Gateway: it answers with an RST ({RESET_POOL})",
            SILENT_POOL: f"Gateway Load Balancer: it drops silently ({SILENT_POOL})",
            KEPT_POOL: f"NAT Gateway, keepalive 300 s on the pool's sockets ({KEPT_POOL})"}
SILENT = {SILENT_POOL}
APPLIANCE = {RESET_POOL: "NAT Gateway", SILENT_POOL: "Gateway Load Balancer",
             KEPT_POOL: "NAT Gateway"}
INTRO = ("natsim demo --story idle-pool: a connection pool answers a request, keeps the "
         "connection idle for 400 s, then reuses it. The appliances forget a flow idle for "
         "350 s.\n")
MORAL = ("\nA reset is the kind failure: a pool that retries recovers in one round trip. A "
         "silent drop is the cruel one: the kernel retransmits for about 15 minutes "
         "(net.ipv4.tcp_retries2) before the application hears anything; TCP_USER_TIMEOUT "
         "bounds that.\nThe fix for both: keepalive below 350 s on pooled connections (or "
         "the pool's own ping), or a pool that closes connections idle longer than that.\n")
DEFAULT_SPEED = 40.0
"""``nat-gw-idle-pool-keepalive`` keeps its probe ahead of the 350 s up to speed 45 (its
scenario file says why); 40 runs the story in about 40 s."""


class PoolNarrator:
    def __init__(self) -> None:
        self.drops: dict[str, int] = {}
        self.flows: dict[str, int] = {}
        self.reused_at: dict[str, float] = {}

    def sentence(self, ev: Mapping[str, Json], column: str) -> str | None:
        source, kind = str(ev.get("source")), str(ev.get("kind"))
        if source == "middlebox" and ev.get("side", "inside") == "inside":
            return self._middlebox(kind, column)
        if source == "client":
            return self._client(kind, ev, column)
        return None

    def _middlebox(self, kind: str, column: str) -> str | None:
        who = APPLIANCE[column]
        if kind == "flow_created":  # a retry's new flow is told with the retry
            self.flows[column] = self.flows.get(column, 0) + 1
            return ("The pool opens a connection; the appliance starts tracking its flow."
                    if self.flows[column] == 1 else None)
        if kind == "keepalive":
            return ("A TCP keepalive probe on the idle pooled connection: zero bytes, yet it "
                    f"resets the {who}'s idle timer.")
        if kind == "flow_expired":
            return ("350 s idle: the appliance forgets the connection. The pool still holds "
                    "it; nobody is told.")
        if kind == "rst_sent":
            return f"The {who} does not know this flow any more: it answers with an RST."
        if kind == "dropped" and column in SILENT:  # (an RST appliance drops, then resets)
            self.drops[column] = n = self.drops.get(column, 0) + 1
            if n == 1:
                return f"The {who} drops the request silently: no RST, nothing comes back."
            if n == 2:
                return ("The client's kernel retransmits it, waiting twice as long each "
                        "time: dropped again.")
            return f"Retransmission {n - 1}: dropped."
        return None

    def _client(self, kind: str, ev: Mapping[str, Json], column: str) -> str | None:
        request, attempt = ev.get("request"), ev.get("attempt")
        first, retry = request == 1, attempt != 1
        t = ev.get("t")
        if kind == "request_sent":
            if first:
                return "Request 1 goes out on it."
            if retry:
                return "The pool retries request 2 on a new connection."
            if isinstance(t, (int, float)):
                self.reused_at[column] = float(t)
            return "400 s later, the pool hands its idle connection to request 2."
        if kind == "answer":
            if first:
                return "Answered. The connection goes back to the pool, idle."
            if retry:
                return "Request 2 is answered: the reset cost one round trip."
            return "Request 2 is answered on the same connection: the probes kept its flow."
        if kind == "reset":
            return "The client reads 'connection reset' (ECONNRESET) at once."
        if kind == "retransmit_timeout":
            waited = ""
            if isinstance(t, (int, float)) and column in self.reused_at:
                waited = f", {float(t) - self.reused_at[column]:.0f} s after the request"
            return (f"The kernel gives up: ETIMEDOUT{waited}. The application hung all that "
                    "time; a pool's retry (for resets) never came.")
        return None
