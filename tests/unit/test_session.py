"""The run session, pure: messages in, the timeline in model-time order, the verdict out.

Lines from three processes arrive through three pipes in any order; the session holds each
for ``hold`` wall seconds and releases them in model-time order; model time zero is the
client's request (or, for a client that starts before its network, its start).
"""

from __future__ import annotations

from simulator.core.events import EventKind
from simulator.core.messages import Kind, Message, MiddleboxStopped, Role, Verdict
from simulator.core.session import RunSession

SPEED = 35.0


def session() -> RunSession:
    s = RunSession(SPEED, ("timeout", "reset"), ("timeout", "reset"))
    s.middlebox_ready(100.0)  # the dataplane's model zero: monotonic 100.0
    return s


def test_model_time_zero_is_the_clients_request() -> None:
    s = session()
    s.feed(Message(Role.CLIENT, Kind.CONNECTED, mono=109.9))
    assert not s.started and s.release(200.0, 0.25) == []  # nothing is placed before zero
    s.feed(Message(Role.CLIENT, Kind.REQUEST_SENT, mono=110.0))
    s.feed(Message(Role.MIDDLEBOX, EventKind.FLOW_EXPIRED, t=(120.0 - 100.0) * SPEED))
    events = s.release(200.0, 0.25)
    assert [(e.kind, round(e.t, 6)) for e in events] == [
        (Kind.CONNECTED, -3.5), (Kind.REQUEST_SENT, 0.0), (EventKind.FLOW_EXPIRED, 350.0)]
    assert events[-1].wall == 10.0


def test_a_pinned_zero_is_kept_whatever_the_client_says_later() -> None:
    """A client that starts before its network: zero is its start, not its request."""
    s = session()
    s.pin_zero(105.0)
    s.feed(Message(Role.CLIENT, Kind.REQUEST_SENT, mono=110.0))
    assert [e.t for e in s.release(200.0, 0.0)] == [5.0 * SPEED]


def test_release_holds_recent_lines_and_orders_across_pipes() -> None:
    """A later line with an earlier time still goes first, once the hold has passed."""
    s = session()
    s.feed(Message(Role.CLIENT, Kind.REQUEST_SENT, mono=110.0))
    s.feed(Message(Role.SERVER, Kind.ANSWER_SENT, mono=121.5))
    s.feed(Message(Role.MIDDLEBOX, EventKind.RST_SENT, t=(121.4 - 100.0) * SPEED))
    assert [e.kind for e in s.release(121.6, 0.25)] == [Kind.REQUEST_SENT]
    late = s.release(121.8, 0.25)
    assert [e.kind for e in late] == [EventKind.RST_SENT, Kind.ANSWER_SENT]
    assert s.release(130.0, 0.25) == []  # each event is released once


def test_release_all_places_a_run_that_never_started() -> None:
    s = session()
    s.feed(Message(Role.CLIENT, Kind.CONNECT_FAILED, mono=104.0))
    s.feed(Message(Role.CLIENT, Kind.CONNECT_FAILED, mono=102.0))
    assert [e.t for e in s.release_all()] == [0.0, 2.0 * SPEED]


def test_outcomes_and_lifecycle_lines_steer_but_do_not_tell_the_story() -> None:
    s = session()
    s.feed(Message(Role.CLIENT, Kind.REQUEST_SENT, mono=110.0))
    s.feed(Message(Role.MIDDLEBOX, Kind.HEARTBEAT, t=1.0))
    s.feed(Message(Role.CLIENT, Kind.OUTCOME, "timeout", mono=135.0,
                   data={"outcome": "timeout"}))
    s.feed(Message("server1", Kind.OUTCOME, "no_client", mono=135.0,
                   data={"outcome": "no_client"}))
    s.feed(Message(Role.SERVER, Kind.OUTCOME, "reset", mono=121.5, data={"outcome": "reset"}))
    s.feed(Message(Role.MIDDLEBOX, Kind.STOPPED, t=2000.0, data={"counters": {"RstSent": 1}}))
    shown = s.release_all()
    assert [e.kind for e in shown] == [Kind.REQUEST_SENT]
    judgement = s.judge()
    # the backend that served the connection speaks for the server, not the idle one
    assert (judgement.client, judgement.server) == ("timeout", "reset")
    assert judgement.verdict is Verdict.PASS and s.counters == {"RstSent": 1}


def test_an_unknown_kind_is_kept_as_output_never_dropped() -> None:
    msg = Message.from_line('{"kind": "frobnicated", "text": "hello", "mono": 1.0}', "client")
    assert msg.kind is Kind.OUTPUT and msg.text == "frobnicated: hello"
    stray = Message.from_line("not json at all", "server")
    assert stray.kind is Kind.OUTPUT and stray.text == "not json at all"


def test_a_final_report_of_the_wrong_shape_is_no_proof_of_life() -> None:
    """The middlebox's last word is read as its typed payload: counters that are not
    counts mean the report is not natsim's, and the run has no verdict."""
    s = session()
    s.feed(Message(Role.MIDDLEBOX, Kind.STOPPED, t=10.0, data={"counters": {"RstSent": "1"}}))
    assert s.judge().verdict is Verdict.ERROR
    assert "counters['RstSent']: expected int" in (s.error or "")
    good = session()
    good.feed(Message.carrying(Role.MIDDLEBOX, Kind.STOPPED,
                               MiddleboxStopped({"RstSent": 1}), t=10.0))
    assert good.counters == {"RstSent": 1} and good.middlebox_final
