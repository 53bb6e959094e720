//! The peer on a host that records frames, on tokio's paused clock.

use super::*;

struct Ctx(Call<Ctx>);

struct Frames {
    sent: Mutex<Vec<String>>,
    handlers: Handlers<Handler<Ctx, Channel<Ctx>>>,
}

impl Host for Frames {
    type Ctx = Ctx;
    fn send(&self, text: String) -> Result<(), RequestError> {
        lock(&self.sent).push(text);
        Ok(())
    }
    fn lookup(&self, c: Option<&str>, n: &str) -> Result<Handler<Ctx, Channel<Ctx>>, PeerError> {
        Handlers::lookup(&[&self.handlers], c, n)
    }
    fn ctx(&self, call: Call<Ctx>) -> Ctx {
        Ctx(call)
    }
}

fn peer(handlers: Handlers<Handler<Ctx, Channel<Ctx>>>, at_once: usize) -> Arc<Peer<Frames>> {
    Peer::new(
        Frames {
            sent: Mutex::default(),
            handlers,
        },
        PeerConfig {
            request_timeout: Duration::from_secs(10),
            handlers_at_once: at_once,
        },
    )
}

fn take(p: &Peer<Frames>) -> Vec<String> {
    std::mem::take(&mut *lock(&p.host().sent))
}

/// Lets spawned handlers run (paused time: nothing else moves).
async fn settle() {
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn handlers_start_in_arrival_order_and_at_most_n_run_at_once() {
    let started = Arc::new(Mutex::new(Vec::new()));
    let mut handlers = Handlers::default();
    let log = started.clone();
    handlers.add(
        None,
        "work",
        handler(move |_ctx: Ctx, (n, ms): (u64, u64)| {
            lock(&log).push(n);
            async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok::<_, PeerError>(n)
            }
        }),
    );
    let p = peer(handlers, 2);
    for (i, ms) in [(1, 30), (2, 10), (3, 0), (4, 0)] {
        p.receive(&format!(r#"{{"a":["work",{i},{ms}],"i":{i}}}"#));
    }
    settle().await;
    assert_eq!(*lock(&started), [1, 2], "two at once; 3 and 4 wait");
    tokio::time::sleep(Duration::from_millis(10)).await;
    settle().await;
    // 2 finished: 3 and 4 (no waiting) ran in order in its turn.
    assert_eq!(*lock(&started), [1, 2, 3, 4]);
    assert_eq!(
        take(&p),
        [r#"{"i":2,"d":2}"#, r#"{"i":3,"d":3}"#, r#"{"i":4,"d":4}"#]
    );
    tokio::time::sleep(Duration::from_millis(30)).await;
    settle().await;
    assert_eq!(take(&p), [r#"{"i":1,"d":1}"#]);
}

#[tokio::test(start_paused = true)]
async fn a_request_times_out_by_the_session_and_sends_the_cancel() {
    let p = peer(Handlers::default(), 4);
    let asked = p.ask_value::<Value>(
        Target::Named(None),
        "slow",
        vec![],
        Some(Duration::from_secs(3)),
        None,
    );
    let t0 = tokio::time::Instant::now();
    assert_eq!(asked.await, Err(RequestError::Timeout));
    assert_eq!(t0.elapsed(), Duration::from_secs(3));
    assert_eq!(
        take(&p),
        [
            r#"{"a":["slow"],"i":1}"#,
            r#"{"i":1,"x":{"message":"Request timed out"},"_":1}"#
        ]
    );
    // Dropped before the answer: cancelled on the wire.
    let fut = p.ask_value::<Value>(Target::Named(None), "slow", vec![], None, None);
    assert!(futures_util::FutureExt::now_or_never(fut).is_none());
    assert_eq!(
        take(&p),
        [
            r#"{"a":["slow"],"i":2}"#,
            r#"{"i":2,"x":{"message":"Request aborted"},"_":1}"#
        ]
    );
    // The connection ends: a waiting request fails as disconnected.
    let waiting = {
        let p = p.clone();
        tokio::spawn(async move {
            p.ask_value::<Value>(Target::Named(None), "x", vec![], None, None)
                .await
        })
    };
    settle().await;
    p.close();
    assert_eq!(waiting.await.unwrap(), Err(RequestError::Disconnected));
    assert_eq!(p.emit(None, "x", vec![]), Err(RequestError::Disconnected));
}

#[tokio::test(start_paused = true)]
async fn an_unserializable_answer_is_an_error_reply_and_a_channel_streams() {
    let mut handlers = Handlers::default();
    handlers.add(
        None,
        "bad",
        handler(|_ctx: Ctx, (): ()| async {
            let mut m = HashMap::new();
            m.insert(vec![1], 2);
            Ok::<_, PeerError>(m)
        }),
    );
    handlers.add(
        None,
        "stream",
        handler(|ctx: Ctx, (): ()| async move {
            let ch = ctx.0.channel().expect("a request");
            ch.on("start", |ctx: Ctx, (): ()| async move {
                let ch = ctx.0.current_channel().expect("in a channel");
                ch.emit("next", (1,))
                    .map_err(|e| PeerError::new(e.to_string()))
            });
            Ok::<_, PeerError>(Reply::Channel(ch))
        }),
    );
    let p = peer(handlers, 4);
    p.receive(r#"{"a":["bad"],"i":1}"#);
    let sent = take(&p);
    assert!(
        sent[0].starts_with(r#"{"i":1,"e":{"message":"unserializable result: "#),
        "{sent:?}"
    );
    p.receive(r#"{"a":["stream"],"i":2}"#);
    p.receive(r#"{"a":["start"],"h":2}"#);
    p.receive(r#"{"h":2,"x":{"message":"bye"},"_":1}"#);
    p.receive(r#"{"a":["start"],"h":2}"#);
    assert_eq!(
        take(&p),
        [
            r#"{"i":2,"h":1}"#,
            r#"{"a":["next",1],"h":2}"#,
            r#"{"h":2,"x":{"message":"Request aborted"},"_":1}"#
        ]
    );
}
