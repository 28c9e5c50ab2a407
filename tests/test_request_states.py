"""Request states: every allowed move works and is recorded; every other move is an error."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from core.models import ActorType, ReprintRequest, RequestState
from core.requests import TRANSITIONS, IllegalTransition, transition

PAIRS = list(itertools.product(RequestState, RequestState))


class _RecordingSession:
    """Enough of a session for `transition`: it only adds the event."""

    def __init__(self) -> None:
        self.added: list[Any] = []

    def add(self, obj: Any) -> None:
        self.added.append(obj)


@pytest.mark.parametrize(("start", "end"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_transition_table(start: RequestState, end: RequestState) -> None:
    request = ReprintRequest(ref="RP-TEST1", state=start)
    request.id = 1
    session = _RecordingSession()
    allowed = end in TRANSITIONS.get(start, frozenset())
    if allowed:
        event = transition(session, request, end, ActorType.AGENT, 42)  # type: ignore[arg-type]
        assert request.state is end
        assert (event.from_state, event.to_state, event.actor_id) == (start, end, 42)
        assert session.added == [event]
    else:
        with pytest.raises(IllegalTransition):
            transition(session, request, end, ActorType.AGENT, 42)  # type: ignore[arg-type]
        assert request.state is start and session.added == []


def test_terminal_states_have_no_way_out() -> None:
    for state in (
        RequestState.REJECTED,
        RequestState.DELIVERED,
        RequestState.CANCELLED,
        RequestState.EXPIRED,
    ):
        assert TRANSITIONS[state] == frozenset()
