//! Every protocol rule as a table row, with no sockets and no clock: each
//! row is a script of application calls, frames from the peer, and the
//! frames and events the session must produce. The ws-wrapper protocol is
//! symmetric, so each row runs for both ends (`Side::Client` and
//! `Side::Server` are the same engine; the rows that need two ends run as a
//! pair, once with each end asking).

use super::*;
use serde_json::json;

/// One step of a row.
#[derive(Debug, Clone)]
enum Step {
    /// The application calls the session.
    Call(CallOp),
    /// A frame from the peer.
    In(&'static str),
    /// The next frame the session sends (exactly).
    Out(&'static str),
    /// No frame left to send.
    Quiet,
    /// The next event.
    Ev(Event),
    /// No event left.
    NoEvent,
    /// The clock moves to this many seconds after the start, and the session is told.
    At(u64),
    /// The connection ends.
    Close,
}

#[derive(Debug, Clone)]
enum CallOp {
    Emit(Option<&'static str>, &'static str, Result<(), SessionError>),
    Request(
        Option<&'static str>,
        &'static str,
        Option<u64>,
        Result<u64, SessionError>,
    ),
    ChannelEmit(u64, &'static str, Result<(), SessionError>),
    ChannelRequest(u64, &'static str, Result<u64, SessionError>),
    Resolve(u64, Value, bool),
    ReplyChannel(u64, bool),
    Reject(u64, &'static str, bool),
    Cancel(u64, bool),
    Abort(u64, &'static str, bool),
}

use CallOp::*;
use Step::*;

/// The end a row runs as; the engine has no role, so both must agree.
#[derive(Debug, Clone, Copy)]
enum Side {
    Client,
    Server,
}

fn run(side: Side, rule: &str, steps: &[Step]) {
    let start = Instant::now();
    let mut now = start;
    let mut s = Session::new(SessionConfig {
        request_timeout: Duration::from_secs(10),
    });
    for (i, step) in steps.iter().enumerate() {
        let at = format!("{side:?}: {rule}: step {i} {step:?}");
        match step.clone() {
            Call(op) => match op {
                Emit(c, n, want) => assert_eq!(s.emit(c, n, vec![json!(1)]), want, "{at}"),
                Request(c, n, secs, want) => {
                    let t = secs.map(Duration::from_secs);
                    assert_eq!(s.request(c, n, vec![], now, t), want, "{at}");
                }
                ChannelEmit(h, n, want) => assert_eq!(s.channel_emit(h, n, vec![]), want, "{at}"),
                ChannelRequest(h, n, want) => {
                    assert_eq!(s.channel_request(h, n, vec![], now, None), want, "{at}");
                }
                Resolve(id, v, want) => assert_eq!(s.reply(id, v), want, "{at}"),
                ReplyChannel(id, want) => assert_eq!(s.reply_channel(id), want, "{at}"),
                Reject(id, m, want) => assert_eq!(s.reject(id, &PeerError::new(m)), want, "{at}"),
                Cancel(id, want) => assert_eq!(s.cancel(id, "Request aborted"), want, "{at}"),
                Abort(h, r, want) => assert_eq!(s.abort(h, r), want, "{at}"),
            },
            In(text) => s.handle_incoming(text, now),
            Out(text) => assert_eq!(s.poll_transmit().as_deref(), Some(text), "{at}"),
            Quiet => assert_eq!(s.poll_transmit(), None, "{at}"),
            Ev(e) => assert_eq!(s.poll_event(), Some(e), "{at}"),
            NoEvent => assert_eq!(s.poll_event(), None, "{at}"),
            At(secs) => {
                now = start + Duration::from_secs(secs);
                s.handle_timeout(now);
            }
            Close => s.close(),
        }
    }
    assert_eq!(
        s.poll_transmit(),
        None,
        "{side:?}: {rule}: frames left over"
    );
    assert_eq!(s.poll_event(), None, "{side:?}: {rule}: events left over");
}

fn check(rule: &str, steps: &[Step]) {
    for side in [Side::Client, Side::Server] {
        run(side, rule, steps);
    }
}

fn request(id: u64, channel: Option<&str>, name: &str, args: Vec<Value>) -> Event {
    Event::Request {
        id,
        channel: channel.map(str::to_string),
        name: name.into(),
        args,
    }
}

fn answer(id: u64, answer: Answer) -> Event {
    Event::Answer { id, answer }
}

fn failed(id: u64, why: Failure) -> Event {
    Event::Failed { id, why }
}

fn error(m: &str) -> Answer {
    Answer::Error(PeerError::new(m))
}

#[test]
fn events_and_requests_both_versions() {
    check(
        "an event, no answer",
        &[
            In(r#"{"a":["hello","x",2]}"#),
            Ev(Event::Event {
                channel: None,
                name: "hello".into(),
                args: vec![json!("x"), json!(2)],
            }),
            Quiet,
        ],
    );
    check(
        "a request answered with a value",
        &[
            In(r#"{"a":["add",2,3],"i":1}"#),
            Ev(request(1, None, "add", vec![json!(2), json!(3)])),
            Call(Resolve(1, json!(5), true)),
            Out(r#"{"i":1,"d":5}"#),
            Call(Resolve(1, json!(6), false)),
            Call(Reject(1, "twice", false)),
            Quiet,
        ],
    );
    check(
        "a request rejected with an Error",
        &[
            In(r#"{"a":["fail"],"i":2}"#),
            Ev(request(2, None, "fail", vec![])),
            Call(Reject(2, "nope", true)),
            Out(r#"{"i":2,"e":{"message":"nope"},"_":1}"#),
        ],
    );
    check(
        "a request on a named channel",
        &[
            In(r#"{"a":["who"],"c":"room1","i":3}"#),
            Ev(request(3, Some("room1"), "who", vec![])),
            Call(Resolve(3, json!("me"), true)),
            Out(r#"{"i":3,"d":"me"}"#),
        ],
    );
    check(
        "a second request with an id in flight is ignored",
        &[
            In(r#"{"a":["x"],"i":1}"#),
            In(r#"{"a":["y"],"i":1}"#),
            Ev(request(1, None, "x", vec![])),
            NoEvent,
        ],
    );
    check(
        "what the protocol ignores changes nothing",
        &[
            In("not json"),
            In(r#"{"ws-wrapper":false,"a":["x"],"i":1}"#),
            In(r#"{"a":["close"],"i":2}"#),
            In(r#"{"i":0,"d":1}"#),
            Quiet,
            NoEvent,
        ],
    );
}

#[test]
fn our_requests_ids_answers_and_late_answers() {
    check(
        "ids count from 1 per connection; answers come as events",
        &[
            Call(Request(None, "add", None, Ok(1))),
            Out(r#"{"a":["add"],"i":1}"#),
            Call(Request(Some("room1"), "who", None, Ok(2))),
            Out(r#"{"a":["who"],"c":"room1","i":2}"#),
            In(r#"{"i":2,"e":{"message":"nope"},"_":1}"#),
            Ev(answer(2, error("nope"))),
            In(r#"{"i":1}"#),
            Ev(answer(1, Answer::Value(Value::Null))),
            In(r#"{"i":1,"d":5}"#),
            NoEvent,
        ],
    );
    check(
        "reserved names are refused on the main channel only",
        &[
            Call(Emit(None, "open", Err(SessionError::Reserved))),
            Call(Request(None, "close", None, Err(SessionError::Reserved))),
            Call(Emit(Some("room"), "open", Ok(()))),
            Out(r#"{"a":["open",1],"c":"room"}"#),
        ],
    );
    check(
        "a rejection of a plain value is a plain value",
        &[
            Call(Request(None, "x", None, Ok(1))),
            Out(r#"{"a":["x"],"i":1}"#),
            In(r#"{"i":1,"e":"plain"}"#),
            Ev(answer(
                1,
                Answer::Error(PeerError {
                    message: "plain".into(),
                    value: json!("plain"),
                }),
            )),
        ],
    );
}

#[test]
fn cancel_and_timeout_4x() {
    check(
        "the requester cancels: {i, x}; a late answer is ignored",
        &[
            Call(Request(None, "slow", None, Ok(1))),
            Out(r#"{"a":["slow"],"i":1}"#),
            Call(Cancel(1, true)),
            Out(r#"{"i":1,"x":{"message":"Request aborted"},"_":1}"#),
            Call(Cancel(1, false)),
            In(r#"{"i":1,"d":"aborted"}"#),
            NoEvent,
            Quiet,
        ],
    );
    check(
        "a timeout sends the cancel and fails the request",
        &[
            Call(Request(None, "slow", Some(1), Ok(1))),
            Call(Request(None, "slower", None, Ok(2))),
            Out(r#"{"a":["slow"],"i":1}"#),
            Out(r#"{"a":["slower"],"i":2}"#),
            At(0),
            Quiet,
            At(1),
            Out(r#"{"i":1,"x":{"message":"Request timed out"},"_":1}"#),
            Ev(failed(1, Failure::TimedOut)),
            At(9),
            NoEvent,
            In(r#"{"i":1,"d":"late"}"#),
            NoEvent,
            At(10),
            Out(r#"{"i":2,"x":{"message":"Request timed out"},"_":1}"#),
            Ev(failed(2, Failure::TimedOut)),
        ],
    );
    check(
        "the peer cancels: the handler is told, and no answer goes out",
        &[
            In(r#"{"a":["slow"],"i":4}"#),
            Ev(request(4, None, "slow", vec![])),
            In(r#"{"i":4,"x":{"message":"This operation was aborted"},"_":1}"#),
            Ev(Event::Cancelled { id: 4 }),
            Call(Resolve(4, json!("aborted"), false)),
            Call(ReplyChannel(4, false)),
            Quiet,
            In(r#"{"i":4,"x":{"message":"again"},"_":1}"#),
            In(r#"{"i":99,"x":null}"#),
            NoEvent,
        ],
    );
}

#[test]
fn anonymous_channels_4x() {
    check(
        "answering with a channel, streaming on it, the peer aborts",
        &[
            In(r#"{"a":["stream"],"i":5}"#),
            Ev(request(5, None, "stream", vec![])),
            Call(ReplyChannel(5, true)),
            Out(r#"{"i":5,"h":1}"#),
            In(r#"{"a":["start"],"h":5}"#),
            Ev(Event::ChannelEvent {
                handle: 5,
                name: "start".into(),
                args: vec![],
            }),
            Call(ChannelEmit(5, "next", Ok(()))),
            Out(r#"{"a":["next"],"h":5}"#),
            In(r#"{"h":5,"x":{"message":"Request aborted"},"_":1}"#),
            Ev(Event::ChannelClosed {
                handle: 5,
                reason: json!({"message": "Request aborted"}),
            }),
            Call(ChannelEmit(5, "next", Err(SessionError::ChannelClosed))),
            In(r#"{"a":["start"],"h":5}"#),
            Out(r#"{"h":5,"x":{"message":"Request aborted"},"_":1}"#),
        ],
    );
    check(
        "asking for a channel, requests on it, this side aborts",
        &[
            Call(Request(None, "feed", None, Ok(1))),
            Out(r#"{"a":["feed"],"i":1}"#),
            In(r#"{"i":1,"h":1}"#),
            Ev(answer(1, Answer::Channel(1))),
            Call(ChannelRequest(1, "ping", Ok(2))),
            Out(r#"{"a":["ping"],"h":1,"i":2}"#),
            In(r#"{"i":2,"d":42}"#),
            Ev(answer(2, Answer::Value(json!(42)))),
            In(r#"{"a":["tick"],"h":"1","i":7}"#),
            Ev(Event::ChannelRequest {
                id: 7,
                handle: 1,
                name: "tick".into(),
                args: vec![],
            }),
            Call(Resolve(7, json!(true), true)),
            Out(r#"{"i":7,"d":true}"#),
            Call(ChannelRequest(1, "ping", Ok(3))),
            Out(r#"{"a":["ping"],"h":1,"i":3}"#),
            Call(Abort(1, "client stops", true)),
            Out(r#"{"h":1,"x":{"message":"client stops"},"_":1}"#),
            Ev(failed(3, Failure::ChannelClosed)),
            Call(Abort(1, "again", false)),
            Call(ChannelRequest(1, "ping", Err(SessionError::ChannelClosed))),
        ],
    );
    check(
        "the peer aborts: requests on the channel fail",
        &[
            Call(Request(None, "feed", None, Ok(1))),
            Out(r#"{"a":["feed"],"i":1}"#),
            In(r#"{"i":1,"h":1}"#),
            Ev(answer(1, Answer::Channel(1))),
            Call(ChannelRequest(1, "ping", Ok(2))),
            Out(r#"{"a":["ping"],"h":1,"i":2}"#),
            In(r#"{"h":1,"x":{"message":"server stops"},"_":1}"#),
            Ev(Event::ChannelClosed {
                handle: 1,
                reason: json!({"message": "server stops"}),
            }),
            Ev(failed(2, Failure::ChannelClosed)),
            In(r#"{"h":1,"x":null}"#),
            NoEvent,
        ],
    );
    check(
        "a channel nobody waits for, or on an unknown handle, is aborted",
        &[
            Call(Request(None, "stream", None, Ok(1))),
            Out(r#"{"a":["stream"],"i":1}"#),
            Call(Cancel(1, true)),
            Out(r#"{"i":1,"x":{"message":"Request aborted"},"_":1}"#),
            In(r#"{"i":1,"h":1}"#),
            Out(r#"{"h":1,"x":{"message":"Request aborted"},"_":1}"#),
            In(r#"{"a":["next"],"h":77}"#),
            Out(r#"{"h":77,"x":{"message":"Request aborted"},"_":1}"#),
            In(r#"{"a":["next"],"h":78,"i":3}"#),
            Out(r#"{"h":78,"x":{"message":"Request aborted"},"_":1}"#),
            Call(ChannelEmit(77, "x", Err(SessionError::ChannelClosed))),
            NoEvent,
        ],
    );
    check(
        "one handle space: a reply channel on an open handle is rejected",
        &[
            Call(Request(None, "feed", None, Ok(1))),
            Out(r#"{"a":["feed"],"i":1}"#),
            In(r#"{"i":1,"h":1}"#),
            Ev(answer(1, Answer::Channel(1))),
            In(r#"{"a":["stream"],"i":1}"#),
            Ev(request(1, None, "stream", vec![])),
            Call(ReplyChannel(1, false)),
            Out(r#"{"i":1,"e":{"message":"anonymous channel 1 is already open"},"_":1}"#),
        ],
    );
}

#[test]
fn the_end_of_the_connection() {
    check(
        "requests fail, the peer's are cancelled, channels close, calls fail",
        &[
            Call(Request(None, "a", None, Ok(1))),
            Call(Request(None, "b", None, Ok(2))),
            In(r#"{"a":["c"],"i":1}"#),
            Ev(request(1, None, "c", vec![])),
            In(r#"{"a":["s"],"i":9}"#),
            Ev(request(9, None, "s", vec![])),
            Call(ReplyChannel(9, true)),
            Close,
            Ev(failed(1, Failure::Disconnected)),
            Ev(failed(2, Failure::Disconnected)),
            Ev(Event::Cancelled { id: 1 }),
            Ev(Event::ChannelClosed {
                handle: 9,
                reason: Value::Null,
            }),
            Quiet,
            Call(Emit(None, "x", Err(SessionError::Closed))),
            Call(Request(None, "x", None, Err(SessionError::Closed))),
            Call(Resolve(1, json!(1), false)),
            In(r#"{"a":["x"],"i":3}"#),
            At(100),
            Close,
        ],
    );
}

/// Two sessions wired together: what one sends, the other receives.
fn pump(from: &mut Session, to: &mut Session, now: Instant) -> usize {
    let mut n = 0;
    while let Some(frame) = from.poll_transmit() {
        to.handle_incoming(&frame, now);
        n += 1;
    }
    n
}

#[test]
fn a_pair_runs_the_recorded_exchange_with_either_end_asking() {
    let now = Instant::now();
    for asker_is_client in [true, false] {
        let mut client = Session::new(SessionConfig::default());
        let mut server = Session::new(SessionConfig::default());
        let (asker, answerer) = if asker_is_client {
            (&mut client, &mut server)
        } else {
            (&mut server, &mut client)
        };
        let add = asker
            .request(None, "add", vec![json!(2), json!(3)], now, None)
            .unwrap();
        let slow = asker.request(None, "slow", vec![], now, None).unwrap();
        let stream = asker.request(None, "stream", vec![], now, None).unwrap();
        assert_eq!(pump(asker, answerer, now), 3);
        let mut asked = Vec::new();
        while let Some(Event::Request { id, name, .. }) = answerer.poll_event() {
            asked.push((id, name));
        }
        assert_eq!(
            asked,
            [(1, "add".into()), (2, "slow".into()), (3, "stream".into())]
        );
        assert!(answerer.reply(add, json!(5)));
        assert!(asker.cancel(slow, "This operation was aborted"));
        assert!(answerer.reply_channel(stream));
        pump(answerer, asker, now);
        pump(asker, answerer, now);
        assert_eq!(answerer.poll_event(), Some(Event::Cancelled { id: slow }));
        assert!(
            !answerer.reply(slow, json!("aborted")),
            "no answer once cancelled"
        );
        assert_eq!(
            asker.poll_event(),
            Some(answer(add, Answer::Value(json!(5))))
        );
        assert_eq!(
            asker.poll_event(),
            Some(answer(stream, Answer::Channel(stream)))
        );
        // Events both ways on the channel, then the asker aborts it.
        asker.channel_emit(stream, "start", vec![]).unwrap();
        pump(asker, answerer, now);
        assert!(
            matches!(answerer.poll_event(), Some(Event::ChannelEvent { name, .. }) if name == "start")
        );
        answerer
            .channel_emit(stream, "next", vec![json!({"done": true})])
            .unwrap();
        pump(answerer, asker, now);
        assert!(
            matches!(asker.poll_event(), Some(Event::ChannelEvent { handle, .. }) if handle == stream)
        );
        assert!(asker.abort(stream, "Request aborted"));
        pump(asker, answerer, now);
        assert!(
            matches!(answerer.poll_event(), Some(Event::ChannelClosed { handle, .. }) if handle == stream)
        );
        assert!(!answerer.is_channel_open(stream) && !asker.is_channel_open(stream));
        assert_eq!(asker.in_flight(), (0, 0));
        assert_eq!(answerer.in_flight(), (0, 0));
    }
}

#[test]
fn typed_handlers_and_the_protocols_rejections() {
    let mut server: Handlers<u8> = Handlers::default();
    let mut own: Handlers<u8> = Handlers::default();
    server.add(None, "who", 1);
    server.add(Some("room1"), "who", 2);
    own.add(None, "who", 3);
    own.add_channel("mine");
    let both = [&own, &server];
    assert_eq!(
        Handlers::lookup(&both, None, "who"),
        Ok(3),
        "own handlers first"
    );
    assert_eq!(Handlers::lookup(&both, Some("room1"), "who"), Ok(2));
    let msg = |c, n| Handlers::lookup(&both, c, n).unwrap_err().message;
    assert_eq!(msg(None, "x"), "No event listener for 'x'");
    assert_eq!(
        msg(Some("nowhere"), "x"),
        "Channel 'nowhere' does not exist"
    );
    assert_eq!(
        msg(Some("mine"), "x"),
        "No event listener for 'x' on channel 'mine'"
    );
    assert_eq!(
        msg(Some("room1"), "x"),
        "No event listener for 'x' on channel 'room1'"
    );

    // Arguments: a tuple reads the array, () none; bad ones are the handler's rejection.
    assert_eq!(
        from_args::<(i64, i64)>(vec![json!(2), json!(3)]),
        Ok((2, 3))
    );
    assert_eq!(from_args::<()>(vec![]), Ok(()));
    assert!(
        from_args::<(i64,)>(vec![json!("x")])
            .unwrap_err()
            .message
            .starts_with("invalid arguments")
    );
    assert_eq!(to_args((2, 3)).unwrap(), vec![json!(2), json!(3)]);
    assert_eq!(to_args(()).unwrap(), Vec::<Value>::new());
    assert_eq!(to_args(("x",)).unwrap(), vec![json!("x")]);
    assert_eq!(to_args(json!({"a": 1})).unwrap(), vec![json!({"a": 1})]);
    let mut bad = HashMap::new();
    bad.insert(vec![1], 2);
    assert!(to_args(bad).is_err());

    // An unserializable reply is an error reply with a message, not null.
    let mut bad = HashMap::new();
    bad.insert(vec![1], 2);
    let e = IntoReply::<()>::into_reply(bad).unwrap_err();
    assert!(e.message.starts_with("unserializable result"), "{e}");
    assert!(matches!(IntoReply::<()>::into_reply(5), Ok(Reply::Value(v)) if v == json!(5)));

    // Rejection values.
    assert_eq!(
        PeerError::from_value(json!({"message": "nope", "code": 7})).message,
        "nope"
    );
    assert_eq!(PeerError::from_value(json!("oops")).message, "oops");
    assert_eq!(PeerError::from_value(json!(42)).message, "42");
    assert_eq!(PeerError::from_value(Value::Null), PeerError::new("Error"));
}

#[test]
fn handlers_run_typed() {
    let h: Handler<(), ()> =
        handler(|(), (a, b): (i64, i64)| async move { Ok::<_, PeerError>(a + b) });
    let out = futures_now(h((), vec![json!(2), json!(3)]));
    assert!(matches!(out, Ok(Reply::Value(v)) if v == json!(5)));
    let out = futures_now(h((), vec![json!("x")]));
    assert!(out.unwrap_err().message.starts_with("invalid arguments"));
    let failing: Handler<(), ()> = handler(|(), (): ()| async { Err::<(), _>("nope") });
    assert_eq!(
        futures_now(failing((), vec![])).unwrap_err(),
        PeerError::new("nope")
    );
}

/// Polls a future that is ready at once.
fn futures_now<T>(f: BoxFuture<T>) -> T {
    let mut f = f;
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("not ready"),
    }
}
