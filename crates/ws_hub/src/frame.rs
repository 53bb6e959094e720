//! Server-to-client frames as bytes: encoded once, written to any number of
//! sockets as they are.

use std::fmt;
use std::io::Cursor;
use std::ops::Range;

use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame as RawFrame, FrameHeader};
use tokio_tungstenite::tungstenite::{Bytes, Message, Utf8Bytes};

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// One complete server-to-client WebSocket frame, header and payload, as it
/// goes on the wire: a server's frames are not masked, so the bytes are the
/// same for every recipient. Made once per message ([`Frame::new`]) and
/// shared: clones are a reference count, not a copy.
///
/// ```
/// use ws_hub::{Frame, Message};
///
/// let frame = Frame::new(&Message::text("hi"));
/// assert_eq!(frame.as_bytes(), b"\x81\x02hi");
/// assert_eq!(frame.payload_len(), 2);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Frame(Bytes);

impl Frame {
    /// The frame of `msg`: a text, binary, ping or pong frame with `FIN`
    /// set, a close frame (code and reason), or a raw frame as it is.
    pub fn new(msg: &Message) -> Frame {
        let mut out = Vec::with_capacity(encoded_len(msg));
        encode(msg, &mut out);
        Frame(Bytes::from(out))
    }

    /// The frame's bytes: header, then payload.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The frame's bytes, shared.
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    /// Bytes of the payload (the frame less its header).
    pub fn payload_len(&self) -> usize {
        self.0.len() - header_len_of(&self.0)
    }

    /// The message the frame carries (for tests and logs: a writer writes
    /// [`as_bytes`](Frame::as_bytes)).
    pub fn message(&self) -> Message {
        decode(&self.0)
            .map(|(msg, _)| msg)
            .expect("a Frame holds one whole frame")
    }
}

impl From<&Message> for Frame {
    fn from(msg: &Message) -> Frame {
        Frame::new(msg)
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("len", &self.0.len())
            .field("payload_len", &self.payload_len())
            .finish()
    }
}

/// Several whole server-to-client frames back to back, encoded once: a
/// burst of messages for the same clients, which each outbox takes with
/// one send ([`WsClient::try_send_frames`](crate::WsClient::try_send_frames):
/// one lock, one copy and at most one wake per recipient for the whole
/// burst, where a [`Frame`] each would take them once per message).
///
/// ```
/// use ws_hub::{Frames, Message};
///
/// let frames = Frames::new(&[Message::text("a"), Message::text("bc")]);
/// assert_eq!(frames.as_bytes(), b"\x81\x01a\x81\x02bc");
/// assert_eq!((frames.len(), frames.payload_len()), (2, 3));
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Frames {
    bytes: Bytes,
    /// Where each frame ends in `bytes`.
    ends: Vec<usize>,
    payload: usize,
}

impl Frames {
    /// The frames of `msgs`, in order, each as [`Frame::new`] makes it.
    pub fn new<'a>(msgs: impl IntoIterator<Item = &'a Message>) -> Frames {
        let msgs = msgs.into_iter();
        let mut out = Vec::new();
        let mut ends = Vec::with_capacity(msgs.size_hint().0);
        let mut payload = 0;
        for msg in msgs {
            out.reserve(encoded_len(msg));
            encode(msg, &mut out);
            ends.push(out.len());
            payload += payload_len(msg);
        }
        Frames {
            bytes: Bytes::from(out),
            ends,
            payload,
        }
    }

    /// How many frames.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// No frame at all.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Bytes of the payloads, all frames together (as the outbox counts them).
    pub fn payload_len(&self) -> usize {
        self.payload
    }

    /// Every frame's bytes, in order.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Each frame on its own, sharing these bytes.
    pub fn iter(&self) -> impl Iterator<Item = Frame> + '_ {
        self.ranges().map(|r| Frame(self.bytes.slice(r)))
    }

    /// Where each frame is in [`as_bytes`](Frames::as_bytes), in order.
    pub(crate) fn ranges(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(self.ends.iter().copied()).map(|(s, e)| s..e)
    }

    /// The bytes, shared.
    pub(crate) fn bytes(&self) -> &Bytes {
        &self.bytes
    }
}

impl fmt::Debug for Frames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frames")
            .field("frames", &self.ends.len())
            .field("len", &self.bytes.len())
            .field("payload_len", &self.payload)
            .finish()
    }
}

/// The length of the header of a frame this module wrote (never masked),
/// from its second byte.
fn header_len_of(bytes: &[u8]) -> usize {
    match bytes.get(1).map(|b| b & 0x7F) {
        Some(126) => 4,
        Some(127) => 10,
        _ => 2,
    }
}

/// Bytes of the header of an unmasked frame with `len` payload bytes.
pub(crate) fn header_len(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=0xFFFF => 4,
        _ => 10,
    }
}

/// Appends the header of an unmasked, final frame: `opcode`, `len` bytes of payload.
pub(crate) fn put_header(out: &mut Vec<u8>, opcode: u8, len: usize) {
    let first = 0x80 | opcode;
    match len {
        0..=125 => out.extend_from_slice(&[first, len as u8]),
        126..=0xFFFF => {
            let n = (len as u16).to_be_bytes();
            out.extend_from_slice(&[first, 126, n[0], n[1]]);
        }
        _ => {
            out.extend_from_slice(&[first, 127]);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
}

/// The payload bytes of a message as the outbox counts them (a close's
/// and a raw frame's count as none).
pub(crate) fn payload_len(m: &Message) -> usize {
    match m {
        Message::Text(t) => t.len(),
        Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b.len(),
        Message::Close(_) | Message::Frame(_) => 0,
    }
}

/// Bytes `encode` appends for `msg`.
pub(crate) fn encoded_len(msg: &Message) -> usize {
    match msg {
        Message::Close(Some(c)) => {
            let len = 2 + c.reason.len();
            header_len(len) + len
        }
        Message::Close(None) => 2,
        Message::Frame(f) => f.len(),
        m => {
            let len = payload_len(m);
            header_len(len) + len
        }
    }
}

/// Appends the frame of `msg` to `out`.
pub(crate) fn encode(msg: &Message, out: &mut Vec<u8>) {
    let (opcode, payload): (u8, &[u8]) = match msg {
        Message::Text(t) => (TEXT, t.as_bytes()),
        Message::Binary(b) => (BINARY, b),
        Message::Ping(b) => (PING, b),
        Message::Pong(b) => (PONG, b),
        Message::Close(None) => (CLOSE, &[]),
        Message::Close(Some(c)) => {
            put_header(out, CLOSE, 2 + c.reason.len());
            out.extend_from_slice(&u16::from(c.code).to_be_bytes());
            out.extend_from_slice(c.reason.as_bytes());
            return;
        }
        Message::Frame(f) => {
            // tungstenite writes raw frames as they are.
            f.clone()
                .format(out)
                .expect("writing into a Vec cannot fail");
            return;
        }
    };
    put_header(out, opcode, payload.len());
    out.extend_from_slice(payload);
}

/// Reads the first frame of `bytes` back into a message, and the bytes it
/// took; `None` if `bytes` does not start with a whole frame.
pub(crate) fn decode(bytes: &[u8]) -> Option<(Message, usize)> {
    let mut cursor = Cursor::new(bytes);
    let (header, len) = FrameHeader::parse(&mut cursor).ok()??;
    let start = usize::try_from(cursor.position()).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    let payload = Bytes::copy_from_slice(bytes.get(start..end)?);
    let msg = match header.opcode {
        _ if !header.is_final || header.mask.is_some() => {
            Message::Frame(RawFrame::from_payload(header, payload))
        }
        OpCode::Data(Data::Text) => Message::Text(Utf8Bytes::try_from(payload).ok()?),
        OpCode::Data(Data::Binary) => Message::Binary(payload),
        OpCode::Control(c) => match u8::from(OpCode::Control(c)) {
            PING => Message::Ping(payload),
            PONG => Message::Pong(payload),
            CLOSE if payload.len() >= 2 => Message::Close(Some(CloseFrame {
                code: CloseCode::from(u16::from_be_bytes([payload[0], payload[1]])),
                reason: Utf8Bytes::try_from(payload.slice(2..)).ok()?,
            })),
            CLOSE => Message::Close(None),
            _ => Message::Frame(RawFrame::from_payload(header, payload)),
        },
        _ => Message::Frame(RawFrame::from_payload(header, payload)),
    };
    Some((msg, end))
}

/// Every frame of `bytes` back into messages (for tests and
/// [`WsClient::take_queued`](crate::WsClient::take_queued)).
pub(crate) fn decode_all(mut bytes: &[u8], into: &mut Vec<Message>) {
    while let Some((msg, used)) = decode(bytes) {
        into.push(msg);
        bytes = &bytes[used..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::frame::Frame as TFrame;

    /// What tungstenite writes for `msg` as a server (the reference).
    fn tungstenite_bytes(msg: &Message) -> Vec<u8> {
        let frame = match msg.clone() {
            Message::Text(t) => TFrame::message(t, OpCode::Data(Data::Text), true),
            Message::Binary(b) => TFrame::message(b, OpCode::Data(Data::Binary), true),
            Message::Ping(b) => TFrame::ping(b),
            Message::Pong(b) => TFrame::pong(b),
            Message::Close(c) => TFrame::close(c),
            Message::Frame(f) => f,
        };
        let mut out = Vec::new();
        frame.format(&mut out).unwrap();
        out
    }

    fn check(msg: Message) {
        let frame = Frame::new(&msg);
        assert_eq!(frame.as_bytes(), tungstenite_bytes(&msg), "{msg:?}");
        assert_eq!(frame.as_bytes().len(), encoded_len(&msg), "{msg:?}");
        assert_eq!(frame.message(), msg);
        let header = header_len_of(frame.as_bytes());
        assert_eq!(frame.payload_len(), frame.as_bytes().len() - header);
    }

    #[test]
    fn frames_are_byte_for_byte_what_tungstenite_writes_at_every_length_boundary() {
        for len in [0, 1, 125, 126, 127, 0xFFFF, 0x1_0000, 70_000] {
            check(Message::binary(vec![7u8; len]));
            check(Message::text("é".repeat(len / 2)));
        }
        check(Message::Ping(Bytes::from_static(b"p")));
        check(Message::Pong(Bytes::new()));
        check(Message::Close(None));
        check(Message::Close(Some(CloseFrame {
            code: CloseCode::Again,
            reason: "slow client".into(),
        })));
        let raw = TFrame::message(Bytes::from_static(b"part"), OpCode::Data(Data::Text), false);
        check(Message::Frame(raw));
    }

    #[test]
    fn a_burst_is_each_message_s_frame_back_to_back() {
        let msgs = [
            Message::text("a"),
            Message::binary(vec![9u8; 300]),
            Message::Ping(Bytes::from_static(b"p")),
            Message::text(""),
        ];
        let frames = Frames::new(&msgs);
        let each: Vec<Frame> = msgs.iter().map(Frame::new).collect();
        assert_eq!(frames.iter().collect::<Vec<_>>(), each);
        assert_eq!(
            frames.as_bytes(),
            each.iter()
                .flat_map(|f| f.as_bytes().to_vec())
                .collect::<Vec<u8>>()
        );
        assert_eq!((frames.len(), frames.payload_len()), (4, 302));
        let empty = Frames::new(&[]);
        assert!(empty.is_empty() && empty.as_bytes().is_empty() && empty.iter().next().is_none());
    }

    #[test]
    fn frames_written_back_to_back_decode_in_order_and_a_partial_one_does_not() {
        let mut out = Vec::new();
        for m in ["a", "bb", "ccc"] {
            encode(&Message::text(m), &mut out);
        }
        let mut got = Vec::new();
        decode_all(&out, &mut got);
        assert_eq!(got, ["a", "bb", "ccc"].map(Message::text));
        assert!(
            decode(&out[7..out.len() - 1]).is_none(),
            "ccc, less its last byte"
        );
    }
}
