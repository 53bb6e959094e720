//! The read half: tungstenite's protocol state, made when bytes arrive and
//! dropped when the connection is between messages again.
//!
//! tungstenite reads (frames, masking, UTF-8, sizes, fragments, control
//! frames and the close handshake) through a [`WebSocketContext`], which
//! takes the stream per call. Its writes (pongs, close frames) go into the
//! connection's [`WriteLane`], never to the socket directly, so they are
//! ordered with the data frames the lane writes.
//!
//! An idle connection holds no read buffer: the context (and its buffer) is
//! made when the socket is readable, with what was read first, and dropped
//! once the peer is at a frame boundary, outside a fragmented message, with
//! nothing more to read. [`Boundary`] follows the frame headers of what was
//! read to know when that is; a fresh context then is the same state.

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::{
    CloseFrame, Role, WebSocketConfig, WebSocketContext,
};

use crate::lane::WriteLane;

/// Bytes read from an idle socket before there is a context to read into.
const FIRST_READ: usize = 512;

/// The read half of a connection; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct Reader {
    ctx: Option<Box<WebSocketContext>>,
    boundary: Boundary,
}

impl Reader {
    /// A reader of a socket from which `first` was read already.
    pub(crate) fn new(first: &[u8], config: &WebSocketConfig) -> Reader {
        let mut reader = Reader::default();
        if !first.is_empty() {
            reader.boundary.observe(first);
            reader.ctx = Some(Box::new(WebSocketContext::from_partially_read(
                first.to_vec(),
                Role::Server,
                Some(*config),
            )));
        }
        reader
    }

    /// The next message, tungstenite's answers to it (pongs, a close reply)
    /// queued in `lane`; `None` once the connection is closed.
    pub(crate) fn poll_next<S>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut S,
        lane: &mut WriteLane,
        config: &WebSocketConfig,
    ) -> Poll<Option<Result<Message, WsError>>>
    where
        S: AsyncRead + Unpin,
    {
        let ctx = match &mut self.ctx {
            Some(ctx) => ctx,
            None => {
                let mut first = [0u8; FIRST_READ];
                let mut buf = ReadBuf::new(&mut first);
                match Pin::new(&mut *io).poll_read(cx, &mut buf) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(WsError::Io(e)))),
                    Poll::Ready(Ok(())) => {}
                }
                // Bytes, or the end (tungstenite reads the end again and
                // says what it means: a close, or a reset without one).
                let read = buf.filled();
                self.boundary.observe(read);
                self.ctx
                    .insert(Box::new(WebSocketContext::from_partially_read(
                        read.to_vec(),
                        Role::Server,
                        Some(*config),
                    )))
            }
        };
        let mut bridge = Bridge {
            io,
            cx,
            lane,
            boundary: &mut self.boundary,
        };
        match ctx.read(&mut bridge) {
            Ok(msg) => Poll::Ready(Some(Ok(msg))),
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                if self.boundary.is_clean() && ctx.can_write() {
                    // Between messages: a fresh context is the same state.
                    self.ctx = None;
                }
                Poll::Pending
            }
            Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    /// Starts the closing handshake: tungstenite's close frame goes into
    /// `lane` (once; later calls do nothing).
    pub(crate) fn close<S>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut S,
        lane: &mut WriteLane,
        config: &WebSocketConfig,
        frame: Option<CloseFrame>,
    ) where
        S: AsyncRead + Unpin,
    {
        let ctx = self
            .ctx
            .get_or_insert_with(|| Box::new(WebSocketContext::new(Role::Server, Some(*config))));
        let mut bridge = Bridge {
            io,
            cx,
            lane,
            boundary: &mut self.boundary,
        };
        // The lane takes every byte: this cannot block. An error means the
        // connection is already closing or closed; the lane has what it needs.
        let _ = ctx.close(&mut bridge, frame);
    }

    /// Whether tungstenite's state is held now (for tests and the size
    /// breakdown: an idle connection holds none).
    #[cfg(test)]
    pub(crate) fn is_holding(&self) -> bool {
        self.ctx.is_some()
    }
}

/// The stream as tungstenite sees it: reads from the socket (would-block
/// when it has nothing), writes into the lane (always whole).
struct Bridge<'a, 'b, S> {
    io: &'a mut S,
    cx: &'a mut Context<'b>,
    lane: &'a mut WriteLane,
    boundary: &'a mut Boundary,
}

impl<S: AsyncRead + Unpin> Read for Bridge<'_, '_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut buf = ReadBuf::new(buf);
        match Pin::new(&mut *self.io).poll_read(self.cx, &mut buf) {
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Ready(Ok(())) => {
                let read = buf.filled();
                self.boundary.observe(read);
                Ok(read.len())
            }
        }
    }
}

impl<S> Write for Bridge<'_, '_, S> {
    fn write(&mut self, frames: &[u8]) -> io::Result<usize> {
        self.lane.push_control(frames);
        Ok(frames.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Follows the frames of what a peer sent by their headers alone: where the
/// next frame starts, and whether a fragmented message is open. The stream
/// is well-formed or tungstenite fails it; this only says when a fresh
/// context would read on the same.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Boundary {
    /// Header bytes of the next frame seen so far.
    header: [u8; 14],
    have: u8,
    /// Payload bytes of the current frame still to come.
    payload: u64,
    /// A data frame without FIN was seen and no final one since.
    fragmented: bool,
}

impl Boundary {
    /// Takes account of `bytes`, the next ones the peer sent.
    pub(crate) fn observe(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.payload > 0 {
                let n = usize::try_from(self.payload).map_or(bytes.len(), |p| p.min(bytes.len()));
                self.payload -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            self.header[usize::from(self.have)] = bytes[0];
            self.have += 1;
            bytes = &bytes[1..];
            if let Some(payload) = self.header_done() {
                let (fin, opcode) = (self.header[0] & 0x80 != 0, self.header[0] & 0x0F);
                if opcode < 0x8 {
                    // Continuation, text or binary: FIN ends the message.
                    self.fragmented = !fin;
                }
                self.payload = payload;
                self.have = 0;
            }
        }
    }

    /// The payload length once the header is whole.
    fn header_done(&self) -> Option<u64> {
        let have = usize::from(self.have);
        if have < 2 {
            return None;
        }
        let code = self.header[1] & 0x7F;
        let extended = match code {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if self.header[1] & 0x80 != 0 { 4 } else { 0 };
        if have < 2 + extended + mask {
            return None;
        }
        Some(match code {
            126 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
            127 => u64::from_be_bytes(self.header[2..10].try_into().expect("8 bytes")),
            n => u64::from(n),
        })
    }

    /// At a frame boundary, outside a fragmented message.
    pub(crate) fn is_clean(&self) -> bool {
        self.have == 0 && self.payload == 0 && !self.fragmented
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

    /// A client's frame: masked.
    fn client_frame(payload: &[u8], opcode: OpCode, fin: bool) -> Vec<u8> {
        masked(Frame::message(payload.to_vec(), opcode, fin))
    }

    fn masked(mut f: Frame) -> Vec<u8> {
        f.header_mut().mask = Some([1, 2, 3, 4]);
        let mut out = Vec::new();
        f.format(&mut out).unwrap();
        out
    }

    fn client_ping(payload: &[u8]) -> Vec<u8> {
        masked(Frame::ping(payload.to_vec()))
    }

    const TEXT: OpCode = OpCode::Data(Data::Text);
    const CONTINUE: OpCode = OpCode::Data(Data::Continue);

    #[test]
    fn boundaries_are_found_at_every_length_and_split() {
        for len in [0, 5, 125, 126, 65_535, 65_536] {
            let wire = client_frame(&vec![b'x'; len], TEXT, true);
            for split in [1, 2, 3, 7, 13, wire.len() / 2, wire.len()] {
                let split = split.min(wire.len());
                let mut b = Boundary::default();
                b.observe(&wire[..split]);
                assert_eq!(b.is_clean(), split == wire.len(), "len {len} split {split}");
                b.observe(&wire[split..]);
                assert!(b.is_clean(), "len {len} split {split}");
            }
        }
    }

    #[test]
    fn a_fragmented_message_is_open_until_its_final_frame_even_across_a_ping() {
        let mut b = Boundary::default();
        b.observe(&client_frame(b"he", TEXT, false));
        assert!(!b.is_clean());
        b.observe(&client_ping(b""));
        assert!(!b.is_clean(), "a control frame does not end it");
        b.observe(&client_frame(b"llo", CONTINUE, true));
        assert!(b.is_clean());
    }

    /// A socket with scripted reads.
    struct Input(Vec<Vec<u8>>);

    impl AsyncRead for Input {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if self.0.is_empty() {
                return Poll::Pending;
            }
            let next = &mut self.0[0];
            let n = next.len().min(buf.remaining());
            buf.put_slice(&next[..n]);
            next.drain(..n);
            if next.is_empty() {
                self.0.remove(0);
            }
            Poll::Ready(Ok(()))
        }
    }

    fn next(r: &mut Reader, input: &mut Input, lane: &mut WriteLane) -> Poll<Option<Message>> {
        let cx = &mut Context::from_waker(std::task::Waker::noop());
        r.poll_next(cx, input, lane, &WebSocketConfig::default())
            .map(|m| m.map(|m| m.unwrap()))
    }

    #[test]
    fn the_context_exists_only_while_a_message_is_being_read() {
        let (mut r, mut lane) = (Reader::default(), WriteLane::new());
        let whole = client_frame(b"hello", TEXT, true);
        let mut input = Input(vec![whole[..3].to_vec()]);
        assert!(next(&mut r, &mut input, &mut lane).is_pending());
        assert!(r.is_holding(), "half a frame read: kept");
        input.0.push(whole[3..].to_vec());
        assert_eq!(
            next(&mut r, &mut input, &mut lane),
            Poll::Ready(Some(Message::text("hello")))
        );
        assert!(next(&mut r, &mut input, &mut lane).is_pending());
        assert!(!r.is_holding(), "between messages: nothing held");
        // A fragmented message keeps it across an idle moment.
        input.0.push(client_frame(b"a", TEXT, false));
        assert!(next(&mut r, &mut input, &mut lane).is_pending());
        assert!(r.is_holding());
        input.0.push(client_frame(b"b", CONTINUE, true));
        assert_eq!(
            next(&mut r, &mut input, &mut lane),
            Poll::Ready(Some(Message::text("ab")))
        );
        assert!(next(&mut r, &mut input, &mut lane).is_pending());
        assert!(!r.is_holding());
    }

    #[test]
    fn a_ping_is_answered_into_the_lane_and_a_close_is_replied_to() {
        let (mut r, mut lane) = (Reader::default(), WriteLane::new());
        let mut input = Input(vec![client_ping(b"hi")]);
        assert_eq!(
            next(&mut r, &mut input, &mut lane),
            Poll::Ready(Some(Message::Ping(b"hi".to_vec().into())))
        );
        assert!(next(&mut r, &mut input, &mut lane).is_pending());
        let mut out = Vec::new();
        let cx = &mut Context::from_waker(std::task::Waker::noop());
        assert!(lane.poll_flush(cx, &mut out).is_ready());
        assert_eq!(out, b"\x8a\x02hi", "the pong, unmasked");

        let close = CloseFrame {
            code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
            reason: "bye".into(),
        };
        input.0.push(masked(Frame::close(Some(close.clone()))));
        assert_eq!(
            next(&mut r, &mut input, &mut lane),
            Poll::Ready(Some(Message::Close(Some(close))))
        );
        assert_eq!(next(&mut r, &mut input, &mut lane), Poll::Ready(None));
        out.clear();
        assert!(lane.poll_flush(cx, &mut out).is_ready());
        assert_eq!(out, b"\x88\x05\x03\xe8bye", "the reply echoes the code");
    }
}
