//! The broadcast load both load rows and targeted rows run: the state the
//! publisher and every reader share, the readers (tokio-tungstenite's, and
//! the lean frame parser), the publisher (in flight or paced) and the drain.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bench_support::Hist;
use bench_support::track::Tracker;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::client::Ws;
use crate::rows::Load;

pub(crate) const MESSAGE_LEN: usize = 64;
pub(crate) const WARMUP: Duration = Duration::from_millis(500);

/// State shared by the publisher and every reader (one thread: `Rc`, `Cell`).
pub(crate) struct Shared {
    pub(crate) epoch: Instant,
    /// Which messages reached how many clients (a targeted row's stray
    /// deliveries: an event reached a connection outside its target).
    pub(crate) t: Tracker,
    pub(crate) hist: RefCell<Hist>,
    /// Readers whose connection ended.
    pub(crate) closed: Cell<u64>,
    pub(crate) wake: tokio::sync::Notify,
    /// Targeted rows: the JSON around the `#SEQ TIMESTAMP` string the publisher
    /// sends (`say` or `whisper`); the events carry the string, found by its `#`.
    /// `None`: `/ws`'s raw 64-byte messages.
    pub(crate) envelope: Option<(String, String)>,
    /// `--redis` rows: the measured latencies of each node's clients too.
    pub(crate) per_node: Option<RefCell<Vec<Hist>>>,
}

impl Shared {
    /// The state of a row whose messages go to `clients` clients on
    /// `nodes` servers; `envelope` as the field says.
    pub(crate) fn new(
        clients: usize,
        envelope: Option<(String, String)>,
        nodes: usize,
    ) -> Rc<Shared> {
        Rc::new(Shared {
            epoch: Instant::now(),
            t: Tracker::new(clients),
            hist: RefCell::new(Hist::new()),
            closed: Cell::new(0),
            wake: tokio::sync::Notify::new(),
            envelope,
            per_node: (nodes > 1).then(|| RefCell::new((0..nodes).map(|_| Hist::new()).collect())),
        })
    }

    /// A message received by a client of node `node` (0: the publisher's).
    pub(crate) fn on_message(&self, m: &[u8], node: usize) {
        let now = self.epoch.elapsed().as_nanos() as u64;
        let m = if self.envelope.is_some() {
            match m.iter().position(|&b| b == b'#') {
                Some(p) => &m[p + 1..],
                None => &[][..],
            }
        } else {
            m
        };
        let r = self.t.receive(m, now);
        if r.completed {
            self.wake.notify_one();
        }
        if let Some(latency) = r.latency_ns {
            self.hist.borrow_mut().record(latency);
            if let Some(per_node) = &self.per_node
                && let Some(h) = per_node.borrow_mut().get_mut(node)
            {
                h.record(latency);
            }
        }
    }

    /// The next message: `SEQ TIMESTAMP ` padded with `x` to 64 bytes.
    pub(crate) fn next_message(&self) -> Message {
        let seq = self.t.send();
        let ts = self.epoch.elapsed().as_nanos() as u64;
        if let Some((head, tail)) = &self.envelope {
            return Message::text(format!("{head}#{seq:010} {ts:020}{tail}"));
        }
        let mut s = format!("{seq:010} {ts:020} ");
        s.extend(std::iter::repeat_n('x', MESSAGE_LEN - s.len()));
        Message::text(s)
    }
}

pub(crate) async fn reader<S>(mut rx: S, sh: Rc<Shared>, node: usize)
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    while let Some(m) = rx.next().await {
        match m {
            Ok(Message::Text(t)) => sh.on_message(t.as_bytes(), node),
            Ok(Message::Binary(b)) => sh.on_message(&b, node),
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    sh.closed.set(sh.closed.get() + 1);
}

/// The lean receive path: after tokio-tungstenite's handshake, reads the socket
/// itself and parses the server's (unmasked) frames in place, without a
/// per-message allocation, and answers pings. Taking the socket out of the
/// `WebSocketStream` loses nothing: servers send nothing before the first
/// broadcast, which comes only after every client has finished its handshake
/// (`/hub` clients read `connection.established` and `subscribed` through the
/// stream first, and nothing else comes before the first event).
pub(crate) async fn raw_reader(tcp: TcpStream, sh: Rc<Shared>, node: usize) {
    let mut buf = vec![0u8; 8192];
    let mut have = 0;
    'read: loop {
        let space = buf.len() - have;
        let Some(n) = bench_support::read_some(&tcp, &mut buf[have..]).await else {
            break;
        };
        have += n;
        let mut pos = 0;
        while have - pos >= 2 {
            let (b0, b1) = (buf[pos], buf[pos + 1]);
            if b1 & 0x80 != 0 {
                // A masked frame from a server is a protocol error.
                sh.t.malformed.set(sh.t.malformed.get() + 1);
                break 'read;
            }
            let (len, head) = match b1 & 0x7f {
                126 if have - pos >= 4 => (
                    usize::from(u16::from_be_bytes([buf[pos + 2], buf[pos + 3]])),
                    4,
                ),
                127 if have - pos >= 10 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&buf[pos + 2..pos + 10]);
                    (u64::from_be_bytes(b) as usize, 10)
                }
                126 | 127 => break,
                l => (usize::from(l), 2),
            };
            if have - pos < head + len {
                if head + len > buf.len() {
                    buf.resize(head + len, 0);
                }
                break;
            }
            let payload = &buf[pos + head..pos + head + len];
            match (b0 & 0x80 != 0, b0 & 0x0f) {
                (true, 1 | 2) => sh.on_message(payload, node),
                (_, 8) => break 'read,
                (_, 9) if len <= 125 => {
                    // Pong with the same payload; a zero mask key leaves it as is.
                    let mut pong = vec![0x8a, 0x80 | len as u8, 0, 0, 0, 0];
                    pong.extend_from_slice(payload);
                    let _ = tcp.try_write(&pong);
                }
                (_, 10) => {}
                _ => sh.t.malformed.set(sh.t.malformed.get() + 1),
            }
            pos += head + len;
        }
        buf.copy_within(pos..have, 0);
        have -= pos;
        if n < space {
            // A short read drained the socket (one thread: see `drained`).
            bench_support::drained(&tcp);
        }
    }
    sh.closed.set(sh.closed.get() + 1);
}

pub(crate) type Sink = SplitSink<Ws, Message>;

pub(crate) async fn publish(
    tx: &mut Sink,
    sh: &Shared,
    load: Load,
    duration: Duration,
) -> Result<(), String> {
    let err = |e: tokio_tungstenite::tungstenite::Error| format!("publish: {e}");
    let until = Instant::now() + duration;
    match load {
        Load::InFlight(max) => loop {
            let mut fed = false;
            while sh.t.in_flight.get() < max {
                tx.feed(sh.next_message()).await.map_err(err)?;
                fed = true;
            }
            if fed {
                tx.flush().await.map_err(err)?;
            }
            tokio::select! {
                () = sh.wake.notified() => {}
                () = tokio::time::sleep_until(until.into()) => return Ok(()),
            }
            if Instant::now() >= until {
                return Ok(());
            }
        },
        Load::Rate(rate) => {
            let start = Instant::now();
            for k in 0.. {
                let at = start + Duration::from_nanos(k * 1_000_000_000 / rate);
                if at >= until {
                    break;
                }
                tokio::time::sleep_until(at.into()).await;
                tx.send(sh.next_message()).await.map_err(err)?;
            }
            Ok(())
        }
    }
}

/// Waits until every sent message reached every client, or no delivery came
/// for 2 s, or 10 s passed.
pub(crate) async fn drain(sh: &Shared) {
    bench_support::drain(&sh.wake, || sh.t.in_flight.get(), || sh.t.completed.get()).await;
}

/// The `q` quantile of a histogram of ns, in ms.
pub(crate) fn ms(h: &Hist, q: f64) -> f64 {
    h.quantile(q) as f64 / 1e6
}
