//! Unit tests of the connection state machine (`conn::State`): its transitions alone,
//! with no socket.

use super::*;

const T: Timeouts = Timeouts {
    head: Duration::from_secs(30),
    keepalive: Duration::from_secs(2),
};

fn at(state: &State, now: Instant) -> Duration {
    state.deadline - now
}

#[test]
fn a_request_taken_back_from_the_pool_reads_its_head_again() {
    let now = Instant::now();
    let mut s = State::fresh(now, T);
    s.bytes_arrived(now, T);
    s.dispatched(now);
    assert_eq!(s.phase, Phase::InApp);
    let later = now + Duration::from_secs(3);
    s.undispatched(later, T);
    assert_eq!(
        (s.phase, at(&s, later), s.requests),
        (Phase::Head, T.head, 0)
    );
    // Only a dispatched request goes back.
    let mut idle = State::fresh(now, T);
    idle.undispatched(later, T);
    assert_eq!((idle.phase, at(&idle, now)), (Phase::Idle, T.head));
}

#[test]
fn a_fresh_connection_waits_a_head_timeout_then_reads_a_head() {
    let now = Instant::now();
    let mut s = State::fresh(now, T);
    assert_eq!((s.phase, at(&s, now), s.requests), (Phase::Idle, T.head, 0));
    let later = now + Duration::from_secs(1);
    s.bytes_arrived(later, T);
    assert_eq!((s.phase, at(&s, later)), (Phase::Head, T.head));
    // More bytes do not extend the head's deadline.
    s.bytes_arrived(later + Duration::from_secs(5), T);
    assert_eq!(at(&s, later), T.head);
}

#[test]
fn a_sent_response_goes_idle_for_keepalive_or_on_to_a_buffered_request() {
    let now = Instant::now();
    let mut s = State::fresh(now, T);
    s.bytes_arrived(now, T);
    assert_eq!(
        s.response_complete(After::KeepAlive, false, false, now, T),
        Next::Read
    );
    assert_eq!(
        (s.phase, at(&s, now), s.requests),
        (Phase::Idle, T.keepalive, 1)
    );
    s.bytes_arrived(now, T);
    assert_eq!(
        s.response_complete(After::KeepAlive, false, true, now, T),
        Next::Read
    );
    assert_eq!((s.phase, at(&s, now), s.requests), (Phase::Head, T.head, 2));
    assert_eq!(
        s.response_complete(After::Close, false, true, now, T),
        Next::Close
    );
}

#[test]
fn a_response_the_client_has_not_taken_is_flushed_first() {
    let now = Instant::now();
    for (after, then) in [(After::KeepAlive, Next::Read), (After::Close, Next::Close)] {
        let mut s = State::fresh(now, T);
        s.bytes_arrived(now, T);
        assert_eq!(s.response_complete(after, true, false, now, T), Next::Flush);
        assert_eq!((s.phase, at(&s, now)), (Phase::Flushing(after), T.head));
        let later = now + Duration::from_secs(10);
        s.output_progress(later, T);
        assert_eq!(
            at(&s, later),
            T.head,
            "progress restarts the write deadline"
        );
        assert_eq!(s.output_drained(false, later, T), then);
    }
    let mut s = State::fresh(now, T);
    s.response_complete(After::KeepAlive, true, false, now, T);
    assert_eq!(s.output_drained(true, now, T), Next::Read);
    assert_eq!(s.phase, Phase::Head, "a pipelined request waited meanwhile");
}

#[test]
fn stopping_gives_idle_connections_a_last_call_and_nothing_more() {
    let now = Instant::now();
    let mut idle = State::fresh(now, T);
    idle.response_complete(After::KeepAlive, false, false, now, T);
    idle.last_call(false, now);
    assert_eq!(at(&idle, now), LAST_CALL.min(T.keepalive));
    let long = Timeouts {
        keepalive: Duration::from_secs(60),
        ..T
    };
    let mut patient = State::fresh(now, long);
    patient.response_complete(After::KeepAlive, false, false, now, long);
    patient.last_call(false, now);
    assert_eq!(at(&patient, now), LAST_CALL);
    // Never later than it was, and a head under way keeps its own deadline.
    let before = patient.deadline;
    patient.last_call(false, now + Duration::from_millis(500));
    assert_eq!(patient.deadline, before);
    let mut head = State::fresh(now, T);
    head.bytes_arrived(now, T);
    head.last_call(true, now);
    assert_eq!(at(&head, now), T.head);
}

#[test]
fn a_request_in_a_thread_has_no_deadline_until_its_response() {
    let now = Instant::now();
    let mut s = State::fresh(now, T);
    s.bytes_arrived(now, T);
    s.dispatched(now);
    assert_eq!(s.phase, Phase::InApp);
    assert!(at(&s, now) > Duration::from_secs(365 * 24 * 3600));
    // Not a stopping worker's idle connection either.
    s.last_call(false, now);
    assert_eq!(s.phase, Phase::InApp);
    let later = now + Duration::from_secs(100);
    assert_eq!(
        s.response_complete(After::KeepAlive, false, false, later, T),
        Next::Read
    );
    assert_eq!((s.phase, at(&s, later)), (Phase::Idle, T.keepalive));
}

#[test]
fn a_connection_handed_in_keeps_the_time_it_had_with_the_sibling() {
    let now = Instant::now();
    let fresh = State::adopted(true, false, now, T);
    assert_eq!(
        fresh,
        State::fresh(now, T),
        "no request yet: the head timeout"
    );
    let kept = State::adopted(false, false, now, T);
    assert_eq!(
        (kept.phase, at(&kept, now), kept.before_first_request()),
        (Phase::Idle, T.keepalive, false)
    );
    // What the sibling had read of a head is a head under way, whatever came before.
    for fresh in [true, false] {
        let s = State::adopted(fresh, true, now, T);
        assert_eq!((s.phase, at(&s, now)), (Phase::Head, T.head));
        assert_eq!(s.before_first_request(), fresh);
    }
}

#[test]
fn only_an_idle_connection_with_nothing_buffered_is_handed_off() {
    let now = Instant::now();
    let mut s = State::fresh(now, T);
    assert_eq!(s.may_hand_off(false, false), Some(true), "fresh");
    assert_eq!(s.may_hand_off(true, false), None, "bytes of a request read");
    assert_eq!(
        s.may_hand_off(false, true),
        None,
        "the client finished sending"
    );
    s.bytes_arrived(now, T);
    assert_eq!(s.may_hand_off(false, false), None, "a head under way");
    s.dispatched(now);
    assert_eq!(s.may_hand_off(false, false), None, "in a thread");
    s.response_complete(After::KeepAlive, true, false, now, T);
    assert_eq!(s.may_hand_off(false, false), None, "flushing");
    s.output_drained(false, now, T);
    assert_eq!(s.may_hand_off(false, false), Some(false), "kept alive");
    s.closing(now);
    assert_eq!(s.may_hand_off(false, false), None, "closing");
}

#[test]
fn a_leaving_worker_passes_on_heads_under_way_within_the_carried_bytes() {
    let now = Instant::now();
    let mut s = State::fresh(now, T);
    assert!(s.may_pass_on(0, false, 10));
    s.bytes_arrived(now, T);
    assert!(s.may_pass_on(10, false, 10));
    assert!(
        !s.may_pass_on(11, false, 10),
        "more than a datagram carries"
    );
    assert!(!s.may_pass_on(0, true, 10), "the client finished sending");
    s.dispatched(now);
    assert!(!s.may_pass_on(0, false, 10), "in a thread");
    s.response_complete(After::KeepAlive, true, false, now, T);
    assert!(!s.may_pass_on(0, false, 10), "flushing");
    s.closing(now);
    assert!(!s.may_pass_on(0, false, 10), "closing");
}

#[test]
fn an_expired_idle_connection_is_looked_at_once_more_and_others_close() {
    let now = Instant::now();
    let idle = State::fresh(now, T);
    assert_eq!(idle.expiry(now, false), Expiry::NotYet);
    let due = now + T.head;
    assert_eq!(idle.expiry(due, false), Expiry::UnlessBytesWaiting);
    assert_eq!(idle.expiry(due, true), Expiry::Close, "the client is gone");
    let mut head = idle;
    head.bytes_arrived(now, T);
    assert_eq!(
        head.expiry(due - Duration::from_millis(1), false),
        Expiry::NotYet
    );
    assert_eq!(head.expiry(due, false), Expiry::Close, "a stalled head");
    let mut flushing = head;
    flushing.response_complete(After::KeepAlive, true, false, now, T);
    assert_eq!(
        flushing.expiry(due, false),
        Expiry::Close,
        "a stalled reader"
    );
    let mut closing = idle;
    closing.closing(now);
    assert_eq!(closing.expiry(now + LINGER, false), Expiry::Close);
    let mut in_app = head;
    in_app.dispatched(now);
    assert_eq!(
        in_app.expiry(now + Duration::from_secs(365 * 24 * 3600), false),
        Expiry::NotYet
    );
}

#[test]
fn closing_lingers_briefly() {
    let now = Instant::now();
    let mut s = State::fresh(now, T);
    s.closing(now);
    assert_eq!((s.phase, at(&s, now)), (Phase::Closing, LINGER));
}
