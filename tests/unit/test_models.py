"""Session state machine and serialisation."""

from vizdesk.sessions.model import PUBLIC_FIELDS, Session, SessionState, can_move


def make() -> Session:
    return Session(
        id="0123456789abcdef",
        user="alice",
        partition="viz",
        cpus=1,
        memory_gb=2,
        gpus=0,
        time_limit_minutes=60,
        geometry="1280x800",
    )


def test_final_states_are_final() -> None:
    for final in (SessionState.ENDED, SessionState.FAILED):
        for dst in SessionState:
            assert can_move(final, dst) == (dst == final)


def test_forward_path_and_stop() -> None:
    s = make()
    assert s.move(SessionState.STARTING)
    assert s.move(SessionState.READY)
    assert s.ready_at is not None
    assert s.move(SessionState.STOPPING, "stop requested")
    assert not s.move(SessionState.READY)  # a stop is never undone by a late tick
    assert s.move(SessionState.ENDED, "stopped by user")
    assert s.ended_at is not None and s.reason == "stopped by user"


def test_round_trip_and_public_view_has_no_internals() -> None:
    s = make()
    s.port = 5905
    s.image_path = "/images/x.sif"
    again = Session.from_json(s.to_json())
    assert again == s
    public = s.to_public()
    assert set(public) == set(PUBLIC_FIELDS)
    assert "port" not in public and "image_path" not in public
    assert public["created_at"].endswith("Z")
