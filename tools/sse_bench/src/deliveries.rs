//! The single-server deliveries row, measured the way `ws-bench` measures
//! its `deliveries-N` rows, so that the two figures compare: `--in-flight`
//! events in flight (an event is in flight from its publish until every
//! subscriber has it), 64-byte payloads, a 0.5 s warm-up, then `--duration`
//! seconds measured; deliveries over the time from the first measured
//! publish to the last receive.
//!
//! The generator is one thread: publishers and readers share `Rc` state.
//! Readers parse the SSE bytes in place (no line copies, no allocation per
//! event), as `ws-bench`'s raw reader parses frames; the generator's and the
//! server's CPU over the window are printed, to show which one was the limit.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use bench_support::Hist;
use bench_support::procfs::cpu_seconds;
use bench_support::track::Tracker;

/// Bytes of each event's data: `SEQ TIMESTAMP ` padded with `x`.
pub(crate) const PAYLOAD: usize = 64;

/// What one row measured.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Figures {
    pub(crate) deliveries_per_sec: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) lost: u64,
    /// Share of one core over the measured window.
    pub(crate) generator_cpu: f64,
    pub(crate) server_cpu: f64,
    /// The server's CPU time per delivery over the window, in µs.
    pub(crate) server_us_per_delivery: f64,
}

/// A row: `subscribers` streams of `/events`, `in_flight` events in flight
/// over `publishers` pipelined connections.
pub(crate) struct Row {
    pub(crate) subscribers: usize,
    pub(crate) in_flight: usize,
    pub(crate) publishers: usize,
    /// Events per request: above 1, `POST /publish/batch`.
    pub(crate) batch: usize,
    pub(crate) duration: Duration,
}

/// State shared by the publishers and every reader (one thread).
struct Shared {
    epoch: Instant,
    /// Which events reached how many subscribers.
    t: Tracker,
    /// Publishing stops (the measured window is over).
    stop: Cell<bool>,
    /// Publish requests written and answered by the load's connections.
    published: Cell<u64>,
    answered: Cell<u64>,
    max_in_flight: Cell<usize>,
    /// Events per request: above 1, `POST /publish/batch`.
    batch: usize,
    hist: RefCell<Hist>,
    closed: Cell<u64>,
    /// An event completed (room for the publishers) or a reader ended.
    wake: tokio::sync::Notify,
}

impl Shared {
    /// The next event's payload; counts it in flight.
    fn next_payload(&self) -> Vec<u8> {
        let seq = self.t.send();
        let ts = self.epoch.elapsed().as_nanos() as u64;
        let mut p = format!("{seq:010} {ts:020} ").into_bytes();
        p.resize(PAYLOAD, b'x');
        p
    }

    /// The data line of an event reached a subscriber at `now` (ns since epoch).
    fn on_event(&self, data: &[u8], now: u64) {
        let r = self.t.receive(data, now);
        if r.completed {
            self.wake.notify_waiters();
        }
        if let Some(latency) = r.latency_ns {
            self.hist.borrow_mut().record(latency / 1000);
        }
    }
}

/// Reads one stream: every `data:` line is an event. Parses the bytes in
/// place (a data line of this benchmark's size is taken whole, without a
/// search for its end); one clock reading per read (what one read returns
/// arrived together); no read that would only find the socket empty.
async fn reader(tcp: TcpStream, first: Vec<u8>, sh: Rc<Shared>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut have = first.len();
    buf[..have].copy_from_slice(&first);
    let mut fresh = have > 0;
    loop {
        let mut drained = false;
        if !fresh {
            let space = buf.len() - have;
            let Some(n) = bench_support::read_some(&tcp, &mut buf[have..]).await else {
                break;
            };
            have += n;
            drained = n < space;
        }
        fresh = false;
        let now = sh.epoch.elapsed().as_nanos() as u64;
        let mut pos = 0;
        loop {
            let rest = &buf[pos..have];
            // This benchmark's events: `data: ` and PAYLOAD bytes, then LF.
            if rest.len() >= DATA_LINE
                && rest.starts_with(b"data: ")
                && rest[DATA_LINE - 1] == b'\n'
            {
                sh.on_event(&rest[6..DATA_LINE - 1], now);
                pos += DATA_LINE;
                continue;
            }
            let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                break;
            };
            if let Some(data) = rest[..nl].strip_prefix(b"data: ") {
                sh.on_event(data, now);
            }
            pos += nl + 1;
        }
        buf.copy_within(pos..have, 0);
        have -= pos;
        if have == buf.len() {
            break; // a line longer than the buffer: not this benchmark's
        }
        if drained {
            // A short read emptied the socket (one thread: see `drained`).
            bench_support::drained(&tcp);
        }
    }
    sh.closed.set(sh.closed.get() + 1);
    sh.wake.notify_waiters();
}

/// `data: `, the payload and its LF.
const DATA_LINE: usize = 6 + PAYLOAD + 1;

/// Opens a stream and returns its socket after the response head, with the
/// body bytes read with the head.
async fn open(addr: SocketAddr) -> std::io::Result<(TcpStream, Vec<u8>)> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let mut r = BufReader::with_capacity(4096, s);
    r.get_mut()
        .write_all(b"GET /events HTTP/1.1\r\nhost: bench\r\n\r\n")
        .await?;
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line.to_ascii_lowercase().starts_with("transfer-encoding:") {
            return Err(std::io::Error::other(
                "a chunked SSE body: rt-server writes long-lived bodies close-delimited",
            ));
        }
        if line == "\r\n" {
            let first = r.buffer().to_vec();
            return Ok((r.into_inner(), first));
        }
    }
}

/// One keep-alive connection that publishes with `POST /publish`.
struct Publisher {
    r: BufReader<TcpStream>,
    line: String,
    req: Vec<u8>,
}

impl Publisher {
    async fn connect(addr: SocketAddr) -> std::io::Result<Publisher> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(Publisher {
            r: BufReader::new(s),
            line: String::new(),
            req: Vec::with_capacity(128),
        })
    }

    /// Publishes `payload` and reads the answer (`202`, else an error).
    async fn publish(&mut self, payload: &[u8]) -> std::io::Result<()> {
        self.req.clear();
        self.req.extend_from_slice(
            format!(
                "POST /publish HTTP/1.1\r\nhost: bench\r\ncontent-length: {}\r\n\r\n",
                payload.len()
            )
            .as_bytes(),
        );
        self.req.extend_from_slice(payload);
        self.r.get_mut().write_all(&self.req).await?;
        let mut length = 0usize;
        let mut status = String::new();
        loop {
            self.line.clear();
            if self.r.read_line(&mut self.line).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            if status.is_empty() {
                status = self.line.trim_end().to_string();
            }
            if let Some(v) = self
                .line
                .to_ascii_lowercase()
                .strip_prefix("content-length:")
            {
                length = v.trim().parse().unwrap_or(0);
            }
            if self.line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; length];
        self.r.read_exact(&mut body).await?;
        if !status.starts_with("HTTP/1.1 202") {
            return Err(std::io::Error::other(format!("publish answered {status}")));
        }
        Ok(())
    }
}

/// One publisher connection of the load, HTTP/1.1 pipelined: whenever
/// fewer than the limit are in flight, it writes as many `POST /publish`
/// (or, with a batch above 1, `POST /publish/batch` of up to that many)
/// requests as there is room for in one write (as `ws-bench` writes its
/// messages on one socket), while a reader takes the answers.
async fn publisher(addr: SocketAddr, sh: Rc<Shared>) -> std::io::Result<()> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let (rd, mut wr) = s.into_split();
    let answers = tokio::task::spawn_local(answers(rd, sh.clone()));
    let mut out = Vec::with_capacity(16 * 128);
    let mut body = Vec::with_capacity(128);
    loop {
        while !sh.stop.get() && sh.t.in_flight.get() >= sh.max_in_flight.get() {
            sh.wake.notified().await;
        }
        if sh.stop.get() {
            break;
        }
        out.clear();
        while sh.t.in_flight.get() < sh.max_in_flight.get() {
            let room = sh.max_in_flight.get() - sh.t.in_flight.get();
            body.clear();
            if sh.batch > 1 {
                body.push(b'[');
                for i in 0..room.min(sh.batch) {
                    if i > 0 {
                        body.push(b',');
                    }
                    body.push(b'"');
                    body.extend_from_slice(&sh.next_payload());
                    body.push(b'"');
                }
                body.push(b']');
            } else {
                body.extend_from_slice(&sh.next_payload());
            }
            let path = if sh.batch > 1 {
                "/publish/batch"
            } else {
                "/publish"
            };
            out.extend_from_slice(
                format!(
                    "POST {path} HTTP/1.1\r\nhost: bench\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            out.extend_from_slice(&body);
            sh.published.set(sh.published.get() + 1);
        }
        wr.write_all(&out).await?;
    }
    // Every answer read before the connection goes.
    while sh.answered.get() < sh.published.get() && !answers.is_finished() {
        let _ = tokio::time::timeout(Duration::from_millis(20), sh.wake.notified()).await;
    }
    answers.abort();
    match answers.await {
        Ok(Err(e)) => Err(e),
        _ => Ok(()),
    }
}

/// Reads the answers of pipelined publishes; an answer other than `202` ends it.
async fn answers(rd: tokio::net::tcp::OwnedReadHalf, sh: Rc<Shared>) -> std::io::Result<()> {
    let mut r = BufReader::new(rd);
    let mut line = String::new();
    loop {
        let mut length = 0usize;
        let mut status = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            if status.is_empty() {
                status = line.trim_end().to_string();
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; length];
        r.read_exact(&mut body).await?;
        if !status.starts_with("HTTP/1.1 202") {
            return Err(std::io::Error::other(format!("publish answered {status}")));
        }
        sh.answered.set(sh.answered.get() + 1);
        sh.wake.notify_waiters();
    }
}

/// Runs the row against the server at `addr` (process `pid`).
pub(crate) async fn run(addr: SocketAddr, pid: u32, row: &Row) -> Result<Figures, String> {
    let sh = Rc::new(Shared {
        epoch: Instant::now(),
        t: Tracker::new(row.subscribers),
        stop: Cell::new(false),
        published: Cell::new(0),
        answered: Cell::new(0),
        max_in_flight: Cell::new(0),
        batch: row.batch,
        hist: RefCell::new(Hist::new()),
        closed: Cell::new(0),
        wake: tokio::sync::Notify::new(),
    });
    let t0 = Instant::now();
    let mut readers = Vec::with_capacity(row.subscribers);
    for _ in 0..row.subscribers {
        let (tcp, first) = open(addr).await.map_err(|e| format!("subscribe: {e}"))?;
        readers.push(tokio::task::spawn_local(reader(tcp, first, sh.clone())));
    }
    let connect_secs = t0.elapsed().as_secs_f64();
    // Every stream registered: an event every 20 ms until one reaches them all.
    let t1 = Instant::now();
    let mut probe = Publisher::connect(addr)
        .await
        .map_err(|e| format!("publish: {e}"))?;
    while sh.t.completed.get() == 0 {
        if t1.elapsed() > Duration::from_secs(10) {
            return Err(format!(
                "after 10 s no event reached all {} streams",
                row.subscribers
            ));
        }
        let payload = sh.next_payload();
        probe
            .publish(&payload)
            .await
            .map_err(|e| format!("publish: {e}"))?;
        let _ = tokio::time::timeout(Duration::from_millis(20), sh.wake.notified()).await;
    }
    drop(probe);
    let sync_secs = t1.elapsed().as_secs_f64();
    // Warm-up at full load, then the measured window. Probes that reach
    // every stream late no longer count as in flight.
    sh.t.track_from.set(sh.t.sent());
    sh.t.in_flight.set(0);
    sh.max_in_flight.set(row.in_flight);
    let pubs: Vec<_> = (0..row.publishers.max(1))
        .map(|_| tokio::task::spawn_local(publisher(addr, sh.clone())))
        .collect();
    tokio::time::sleep(WARM_UP).await;
    let (gen_cpu0, srv_cpu0) = (cpu_seconds(std::process::id()), cpu_seconds(pid));
    let received0 = sh.t.received.get();
    let window = Instant::now();
    let start_ns = sh.epoch.elapsed().as_nanos() as u64;
    let measure_from = sh.t.sent();
    sh.t.measure_from.set(measure_from);
    tokio::time::sleep(row.duration).await;
    sh.stop.set(true);
    sh.wake.notify_waiters();
    let cpu_wall = window.elapsed().as_secs_f64();
    let srv_secs = cpu_seconds(pid) - srv_cpu0;
    let in_window = sh.t.received.get() - received0;
    let (gen_cpu, srv_cpu) = (
        (cpu_seconds(std::process::id()) - gen_cpu0) / cpu_wall,
        srv_secs / cpu_wall,
    );
    for p in pubs {
        p.await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("publish: {e}"))?;
    }
    bench_support::drain(&sh.wake, || sh.t.in_flight.get(), || sh.t.completed.get()).await;
    let measured = sh.t.sent() - measure_from;
    let want = measured * row.subscribers as u64;
    let got = sh.t.delivered.get();
    let secs = (sh.t.last_receive_ns.get().saturating_sub(start_ns)) as f64 / 1e9;
    let (p50, p99, max) = {
        let hist = sh.hist.borrow();
        (hist.quantile(0.50), hist.quantile(0.99), hist.max())
    };
    let f = Figures {
        deliveries_per_sec: got as f64 / secs.max(1e-9),
        p50_ms: p50 as f64 / 1000.0,
        p99_ms: p99 as f64 / 1000.0,
        lost: want.saturating_sub(got),
        generator_cpu: gen_cpu,
        server_cpu: srv_cpu,
        server_us_per_delivery: srv_secs * 1e6 / in_window.max(1) as f64,
    };
    println!(
        "  connected {} in {connect_secs:.2} s; all receiving after {sync_secs:.2} s; warm-up {:.1} s",
        row.subscribers,
        WARM_UP.as_secs_f64()
    );
    println!(
        "  published {measured} events of {PAYLOAD} B; deliveries {got} of {want} in {secs:.2} s = {:.0} deliveries/s; lost {}",
        f.deliveries_per_sec, f.lost
    );
    println!(
        "  latency publish->receive: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        f.p50_ms,
        f.p99_ms,
        max as f64 / 1000.0
    );
    println!(
        "  CPU over the window: server {:.0}% of one core = {:.3} µs per delivery, generator {:.0}% of one core{}",
        srv_cpu * 100.0,
        f.server_us_per_delivery,
        gen_cpu * 100.0,
        if sh.t.malformed.get() > 0 {
            format!("; {} malformed events", sh.t.malformed.get())
        } else {
            String::new()
        }
    );
    for r in readers {
        r.abort();
    }
    if let Ok(stats) = crate::get(addr, "/stats").await {
        println!("  server stats: {}", stats.trim());
    }
    Ok(f)
}

const WARM_UP: Duration = Duration::from_millis(500);
