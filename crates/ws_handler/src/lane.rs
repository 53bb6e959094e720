//! The write lane: the one owner of a connection's write half.
//!
//! Everything a connection writes goes through one [`WriteLane`], in the
//! order it was queued: data frames as the outbox framed them ([`Batch`]:
//! copied or shared bytes, written as they are, never re-encoded), and
//! control frames (tungstenite's pongs and close frames, the server's
//! pings). Every queued piece is a run of whole frames, so whatever the
//! socket accepts at a time (a partial write stops anywhere), the next piece
//! starts on a frame boundary: frames never interleave. The lane writes as
//! many pieces as it holds with one vectored write, and allocates nothing
//! while it is empty.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::AsyncWrite;
use tokio::time::Instant;
use ws_hub::{Batch, Chunk};

/// Pieces given to one vectored write at most.
const MAX_SLICES: usize = 64;

/// The frame of a ping with no payload.
pub(crate) const PING: &[u8] = &[0x89, 0x00];

/// A connection's write half: see the module docs.
#[derive(Debug)]
pub(crate) struct WriteLane {
    /// What is to be written, in order.
    queue: VecDeque<Piece>,
    /// Bytes of `queue[0]` already written.
    at: usize,
    /// Bytes were written since the stream was last flushed.
    unflushed: bool,
    /// Since when the stream has taken nothing while something waits: set
    /// when a write pends (no clock is read while writes go through),
    /// cleared by the next byte written. The write timeout counts from here.
    stalled: Option<Instant>,
    /// A written copy buffer, for the outbox to fill next (see [`batch`](WriteLane::batch)).
    spare: Vec<u8>,
}

/// Whole frames to write.
#[derive(Debug)]
struct Piece {
    chunk: Chunk,
    /// Data (from the outbox), not control.
    data: bool,
}

impl WriteLane {
    pub(crate) fn new() -> WriteLane {
        WriteLane {
            queue: VecDeque::new(),
            at: 0,
            unflushed: false,
            stalled: None,
            spare: Vec::new(),
        }
    }

    /// Whether everything queued was written (flushed or not).
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Since when the stream has taken nothing while something waits.
    pub(crate) fn stalled(&self) -> Option<Instant> {
        self.stalled.filter(|_| !self.queue.is_empty())
    }

    /// An empty batch for [`WsClient::poll_outgoing`](ws_hub::WsClient::poll_outgoing),
    /// with the buffer last written in it: the outbox fills that one next
    /// instead of allocating (and frees it when it waits).
    pub(crate) fn batch(&mut self) -> Batch {
        let mut batch = Batch::new();
        batch.recycle(std::mem::take(&mut self.spare));
        batch
    }

    /// Queues the frames of `batch` (taken out of it) as data, after what a
    /// direct write left unfinished, if the batch holds that.
    pub(crate) fn push_data(&mut self, batch: &mut Batch) {
        if let Some(rest) = batch.take_unfinished() {
            self.push_unfinished(rest);
        }
        for chunk in batch.take_chunks() {
            self.queue.push_back(Piece { chunk, data: true });
        }
    }

    /// Puts the end of frames a direct write started first: the socket's
    /// next bytes must be these. Never abandoned for a close (the peer has
    /// the start of the frames). Only while nothing of the lane is written
    /// yet, which is how it is whenever a direct write could have run.
    pub(crate) fn push_unfinished(&mut self, rest: Vec<u8>) {
        debug_assert_eq!(self.at, 0, "a direct write ran during the lane's write");
        if !rest.is_empty() {
            self.queue.push_front(Piece {
                chunk: Chunk::Copied(rest),
                data: false,
            });
        }
    }

    /// Queues control frames (whole frames, as tungstenite writes them).
    pub(crate) fn push_control(&mut self, frames: &[u8]) {
        if frames.is_empty() {
            return;
        }
        if let Some(Piece {
            chunk: Chunk::Copied(run),
            data: false,
        }) = self.queue.back_mut()
        {
            run.extend_from_slice(frames);
            return;
        }
        self.queue.push_back(Piece {
            chunk: Chunk::Copied(frames.to_vec()),
            data: false,
        });
    }

    /// Drops the data not started yet, for a close that goes before queued
    /// data: the piece being written, if any, is finished (the peer never
    /// sees half a frame); control frames stay, in order.
    pub(crate) fn abandon_data(&mut self) {
        let started = self.at > 0;
        let mut first = true;
        self.queue.retain(|piece| {
            let keep = !piece.data || (first && started);
            first = false;
            keep
        });
        if self.queue.is_empty() {
            self.at = 0;
        }
    }

    /// Writes what is queued, as much at a time as the stream takes, then
    /// flushes the stream: ready when all is written (the lane then holds
    /// no buffer but the spare one), pending while the stream is full.
    pub(crate) fn poll_flush<W>(
        &mut self,
        cx: &mut Context<'_>,
        stream: &mut W,
    ) -> Poll<io::Result<()>>
    where
        W: AsyncWrite + Unpin,
    {
        while !self.queue.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut n = 0;
            for (i, piece) in self.queue.iter().take(MAX_SLICES).enumerate() {
                let bytes = piece.chunk.as_bytes();
                slices[i] = IoSlice::new(if i == 0 { &bytes[self.at..] } else { bytes });
                n = i + 1;
            }
            // One piece (the usual case: small frames are copied into one
            // buffer) is a plain write: `send` costs the kernel less than `writev`.
            let write = if n == 1 {
                Pin::new(&mut *stream).poll_write(cx, &slices[0])
            } else {
                Pin::new(&mut *stream).poll_write_vectored(cx, &slices[..n])
            };
            let written = match write {
                Poll::Pending => {
                    self.stalled.get_or_insert_with(Instant::now);
                    return Poll::Pending;
                }
                Poll::Ready(r) => r?,
            };
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.stalled = None;
            self.unflushed = true;
            self.advance(written);
        }
        if self.unflushed {
            ready!(Pin::new(&mut *stream).poll_flush(cx))?;
            self.unflushed = false;
        }
        if self.queue.capacity() > 0 {
            self.queue = VecDeque::new();
        }
        Poll::Ready(Ok(()))
    }

    /// Marks `n` bytes written.
    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let left = self.queue[0].chunk.as_bytes().len() - self.at;
            if n < left {
                self.at += n;
                return;
            }
            n -= left;
            self.at = 0;
            let done = self
                .queue
                .pop_front()
                .expect("bytes written belong to a piece");
            if let (Chunk::Copied(buffer), true) = (done.chunk, done.data)
                && self.spare.capacity() == 0
            {
                self.spare = buffer;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;
    use ws_hub::{HubConfig, Message, WsHub};

    /// In a [`Script`]: the write pends.
    const PEND: usize = usize::MAX;
    /// In a [`Script`]: the write fails.
    const FAIL: usize = usize::MAX - 1;

    /// A stream that takes at most `take[i]` bytes at its i-th write (then
    /// everything), pends at [`PEND`] and fails at [`FAIL`]; it keeps what
    /// it took.
    #[derive(Default)]
    struct Script {
        take: VecDeque<usize>,
        got: Vec<u8>,
        writes: usize,
        flushes: usize,
    }

    impl AsyncWrite for Script {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes += 1;
            let n = match self.take.pop_front() {
                Some(PEND) => return Poll::Pending,
                Some(FAIL) => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
                Some(n) => n.min(buf.len()),
                None => buf.len(),
            };
            self.got.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            self.as_mut().poll_write(cx, &all)
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn script(take: &[usize]) -> Script {
        Script {
            take: take.iter().copied().collect(),
            ..Script::default()
        }
    }

    fn flush(lane: &mut WriteLane, stream: &mut Script) -> Poll<io::Result<()>> {
        let cx = &mut Context::from_waker(Waker::noop());
        lane.poll_flush(cx, stream)
    }

    /// A batch of `texts`, as a writer takes it from an outbox.
    fn batch(texts: &[&str]) -> Batch {
        let hub = WsHub::new(HubConfig::default());
        let c = hub.register(None).unwrap();
        for t in texts {
            c.try_send(Message::text(*t)).unwrap();
        }
        let mut b = Batch::new();
        let cx = &mut Context::from_waker(Waker::noop());
        assert!(c.poll_outgoing(cx, &mut b).is_ready());
        b
    }

    /// The messages of the bytes written, in order; every frame whole.
    fn frames(mut bytes: &[u8]) -> Vec<Message> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let len = 2 + usize::from(bytes[1] & 0x7F);
            let msg = match bytes[0] {
                0x81 => Message::text(std::str::from_utf8(&bytes[2..len]).unwrap()),
                0x89 => Message::Ping(bytes[2..len].to_vec().into()),
                0x8A => Message::Pong(bytes[2..len].to_vec().into()),
                0x88 => Message::binary(bytes[2..len].to_vec()), // a close, by its payload
                b => panic!("not a frame start: {b:#x}"),
            };
            out.push(msg);
            bytes = &bytes[len..];
        }
        out
    }

    fn pong(p: &[u8]) -> Vec<u8> {
        let mut f = vec![0x8A, p.len() as u8];
        f.extend_from_slice(p);
        f
    }

    #[test]
    fn data_and_control_go_out_in_the_order_queued_in_one_write() {
        let mut lane = WriteLane::new();
        lane.push_data(&mut batch(&["a", "b"]));
        lane.push_control(&pong(b"1"));
        lane.push_control(PING);
        lane.push_data(&mut batch(&["c"]));
        let mut s = script(&[]);
        assert!(flush(&mut lane, &mut s).is_ready());
        assert_eq!(
            frames(&s.got),
            [
                Message::text("a"),
                Message::text("b"),
                Message::Pong(b"1".to_vec().into()),
                Message::Ping(Default::default()),
                Message::text("c"),
            ]
        );
        assert_eq!(
            (s.writes, s.flushes),
            (1, 1),
            "one vectored write, one flush"
        );
        assert!(lane.is_empty());
        assert_eq!(lane.queue.capacity(), 0, "nothing held once written");
    }

    #[test]
    fn a_control_frame_queued_during_a_partial_write_waits_for_the_frame_boundary() {
        let mut lane = WriteLane::new();
        lane.push_data(&mut batch(&["hello", "world"]));
        // The socket takes 3 bytes, then is full.
        let mut s = script(&[3, PEND]);
        assert!(flush(&mut lane, &mut s).is_pending());
        lane.push_control(&pong(b"p"));
        assert!(flush(&mut lane, &mut s).is_ready());
        assert_eq!(
            frames(&s.got),
            [
                Message::text("hello"),
                Message::text("world"),
                Message::Pong(b"p".to_vec().into()),
            ],
            "the pong after the data it arrived behind, no frame cut"
        );
    }

    #[test]
    fn partial_writes_of_every_size_keep_every_frame_whole() {
        for step in 1..12 {
            let mut lane = WriteLane::new();
            lane.push_data(&mut batch(&["one", "two"]));
            lane.push_control(PING);
            lane.push_data(&mut batch(&["three"]));
            let mut s = script(&[step; 64]);
            assert!(flush(&mut lane, &mut s).is_ready());
            assert_eq!(
                frames(&s.got),
                [
                    Message::text("one"),
                    Message::text("two"),
                    Message::Ping(Default::default()),
                    Message::text("three"),
                ],
                "{step} bytes a write"
            );
        }
    }

    #[test]
    fn a_close_after_queued_data_goes_out_last() {
        let mut lane = WriteLane::new();
        lane.push_data(&mut batch(&["answer"]));
        let close = [0x88, 0x02, 0x03, 0xE8];
        lane.push_control(&close);
        let mut s = script(&[2, PEND]);
        assert!(flush(&mut lane, &mut s).is_pending());
        assert!(flush(&mut lane, &mut s).is_ready());
        assert_eq!(
            frames(&s.got),
            [Message::text("answer"), Message::binary(vec![0x03, 0xE8])]
        );
    }

    #[test]
    fn the_end_of_a_frame_a_direct_write_started_goes_first_and_survives_a_close() {
        // A pong waits in the lane; the rest of "hello" (a direct write sent
        // its first 3 bytes) must go before it, and a close keeps it.
        let mut lane = WriteLane::new();
        lane.push_control(&pong(b"p"));
        lane.push_data(&mut batch(&["dropped"]));
        lane.push_unfinished(b"llo".to_vec());
        lane.abandon_data();
        let mut s = script(&[]);
        s.got.extend_from_slice(b"\x81\x05he");
        assert!(flush(&mut lane, &mut s).is_ready());
        assert_eq!(
            frames(&s.got),
            [Message::text("hello"), Message::Pong(b"p".to_vec().into())]
        );
    }

    #[test]
    fn a_close_before_queued_data_finishes_the_piece_started_and_keeps_control_frames() {
        let mut lane = WriteLane::new();
        lane.push_data(&mut batch(&["started", "same piece"]));
        lane.push_control(&pong(b"x"));
        lane.push_data(&mut batch(&["dropped"]));
        let mut s = script(&[4, PEND]);
        assert!(flush(&mut lane, &mut s).is_pending());
        lane.abandon_data();
        lane.push_control(&[0x88, 0x00]);
        assert!(flush(&mut lane, &mut s).is_ready());
        assert_eq!(
            frames(&s.got),
            [
                Message::text("started"),
                Message::text("same piece"),
                Message::Pong(b"x".to_vec().into()),
                Message::binary(Vec::new()),
            ]
        );

        // Nothing started: all the data goes.
        let mut lane = WriteLane::new();
        lane.push_data(&mut batch(&["never"]));
        lane.abandon_data();
        assert!(lane.is_empty());
    }

    #[test]
    fn a_write_error_or_a_zero_write_is_an_error_and_a_full_socket_pends() {
        let mut lane = WriteLane::new();
        lane.push_data(&mut batch(&["x"]));
        let mut s = script(&[PEND]);
        assert!(flush(&mut lane, &mut s).is_pending());
        let mut s = script(&[FAIL]);
        let Poll::Ready(Err(e)) = flush(&mut lane, &mut s) else {
            panic!("an error")
        };
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        let mut lane = WriteLane::new();
        lane.push_control(PING);
        let Poll::Ready(Err(e)) = flush(&mut lane, &mut script(&[0])) else {
            panic!("a zero write")
        };
        assert_eq!(e.kind(), io::ErrorKind::WriteZero);
    }

    #[test]
    fn written_copy_buffers_go_back_for_the_next_batch() {
        let mut lane = WriteLane::new();
        lane.push_data(&mut batch(&["reuse me"]));
        let cx = &mut Context::from_waker(Waker::noop());
        let mut s = script(&[]);
        assert!(lane.poll_flush(cx, &mut s).is_ready());
        let mut recycle = lane.batch();
        // The drained batch hands its buffer to the outbox on the next take.
        let hub = WsHub::new(HubConfig::default());
        let c = hub.register(None).unwrap();
        c.try_send(Message::text("next")).unwrap();
        assert!(c.poll_outgoing(cx, &mut recycle).is_ready());
        let mut again = Batch::new();
        c.try_send(Message::text("then")).unwrap();
        assert!(c.poll_outgoing(cx, &mut again).is_ready());
        let Some(Chunk::Copied(buffer)) = again.take_chunks().next() else {
            panic!("copied")
        };
        assert!(
            buffer.capacity() >= 10,
            "the recycled buffer, not a new one"
        );
    }
}
