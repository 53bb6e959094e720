//! Encodes one `SseEvent` into `text/event-stream` bytes, refusing fields that would break the stream.
//!
//! A pure function: bytes out, no I/O, so it is tested byte for byte against
//! the WHATWG event-stream format without a runtime. It appends to a buffer,
//! so several events can be batched into one write.
//!
//! - `data` with several lines becomes several `data:` lines; CR, LF and CRLF
//!   are all line breaks, and the browser joins the lines back with LF.
//! - `comment` lines are written first (`: text`), then `event`, `id`,
//!   `retry` (whole milliseconds) and `data`, then the blank line that ends the event.
//! - A line break or NUL in `event` or `id` is an error, not a broken stream;
//!   on error nothing is appended.
//!
//! # Example
//!
//! ```
//! use sse_encode::sse_encode;
//! use sse_event::SseEvent;
//!
//! let mut buf = Vec::new();
//! sse_encode(&SseEvent::data("line one\nline two").event("note").id("7"), &mut buf)?;
//! assert_eq!(buf, b"event: note\nid: 7\ndata: line one\ndata: line two\n\n");
//! # Ok::<(), sse_encode::SseEncodeError>(())
//! ```
//!
//! # Errors
//!
//! [`SseEncodeError`] when `event` or `id` holds a CR, LF or NUL.

use std::fmt;

use sse_event::SseEvent;

/// Appends the wire form of `event` to `out`.
///
/// An event with no field at all appends nothing.
pub fn sse_encode(event: &SseEvent, out: &mut Vec<u8>) -> Result<(), SseEncodeError> {
    if let Some(name) = &event.event {
        single_line(name).map_err(|at| SseEncodeError::InvalidEvent { at })?;
    }
    if let Some(id) = &event.id {
        single_line(id).map_err(|at| SseEncodeError::InvalidId { at })?;
    }
    let start = out.len();
    if let Some(comment) = &event.comment {
        for line in lines(comment) {
            out.push(b':');
            if !line.is_empty() {
                out.push(b' ');
                out.extend_from_slice(line);
            }
            out.push(b'\n');
        }
    }
    if let Some(name) = &event.event {
        field(out, b"event", name.as_bytes());
    }
    if let Some(id) = &event.id {
        field(out, b"id", id.as_bytes());
    }
    if let Some(retry) = event.retry {
        field(out, b"retry", retry.as_millis().to_string().as_bytes());
    }
    if let Some(data) = &event.data {
        for line in lines(data) {
            field(out, b"data", line);
        }
    }
    if out.len() > start {
        out.push(b'\n');
    }
    Ok(())
}

/// Why an event cannot be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SseEncodeError {
    /// `event` holds a CR, LF or NUL at byte `at`: it would end the field early.
    InvalidEvent {
        /// Byte offset of the offending character.
        at: usize,
    },
    /// `id` holds a CR, LF or NUL at byte `at`: browsers would ignore or split it.
    InvalidId {
        /// Byte offset of the offending character.
        at: usize,
    },
}

impl fmt::Display for SseEncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (field, at) = match self {
            SseEncodeError::InvalidEvent { at } => ("event", at),
            SseEncodeError::InvalidId { at } => ("id", at),
        };
        write!(
            f,
            "SSE `{field}` has a line break or NUL at byte {at}; it must be one line"
        )
    }
}

impl std::error::Error for SseEncodeError {}

fn single_line(s: &str) -> Result<(), usize> {
    match s.bytes().position(|b| matches!(b, b'\r' | b'\n' | 0)) {
        Some(at) => Err(at),
        None => Ok(()),
    }
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Splits on CRLF, CR and LF; `""` is one empty line and a trailing break
/// gives a trailing empty line (so `"a\n"` round-trips).
fn lines(s: &str) -> impl Iterator<Item = &[u8]> {
    let b = s.as_bytes();
    let mut pos = 0;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        match b[pos..].iter().position(|&c| c == b'\r' || c == b'\n') {
            Some(i) => {
                let line = &b[pos..pos + i];
                let crlf = b[pos + i] == b'\r' && b.get(pos + i + 1) == Some(&b'\n');
                pos += i + if crlf { 2 } else { 1 };
                Some(line)
            }
            None => {
                done = true;
                Some(&b[pos..])
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn check(ev: SseEvent, want: &str) {
        let mut out = Vec::new();
        sse_encode(&ev, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), want);
    }

    /// The WHATWG "interpret an event stream" algorithm, enough to read our
    /// output back: returns (event type, data, last event id) per dispatch.
    fn parse(stream: &str) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        let (mut ty, mut data, mut last_id) = (String::new(), String::new(), String::new());
        let normalized = stream.replace("\r\n", "\n").replace('\r', "\n");
        for line in normalized.split('\n') {
            if line.is_empty() {
                if !data.is_empty() {
                    data.pop();
                    let t = if ty.is_empty() {
                        "message".into()
                    } else {
                        ty.clone()
                    };
                    out.push((t, data.clone(), last_id.clone()));
                }
                ty.clear();
                data.clear();
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (name, value) = match line.split_once(':') {
                Some((n, v)) => (n, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match name {
                "event" => ty = value.to_string(),
                "data" => {
                    data.push_str(value);
                    data.push('\n');
                }
                "id" if !value.contains('\0') => last_id = value.to_string(),
                _ => {}
            }
        }
        out
    }

    #[test]
    fn data_only() {
        check(SseEvent::data("hello"), "data: hello\n\n");
    }

    #[test]
    fn every_field_in_order_comment_event_id_retry_data() {
        let mut ev = SseEvent::data("x")
            .event("e")
            .id("1")
            .retry(Duration::from_millis(2500));
        ev.comment = Some("c".into());
        check(ev, ": c\nevent: e\nid: 1\nretry: 2500\ndata: x\n\n");
    }

    #[test]
    fn cr_lf_and_crlf_split_data_into_data_lines() {
        check(
            SseEvent::data("a\rb\nc\r\nd"),
            "data: a\ndata: b\ndata: c\ndata: d\n\n",
        );
    }

    #[test]
    fn empty_and_trailing_lines_are_kept() {
        check(SseEvent::data(""), "data: \n\n");
        check(SseEvent::data("a\n"), "data: a\ndata: \n\n");
        check(SseEvent::data("\n\n"), "data: \ndata: \ndata: \n\n");
    }

    #[test]
    fn a_leading_space_survives_the_one_the_browser_strips() {
        check(SseEvent::data(" x"), "data:  x\n\n");
    }

    #[test]
    fn comment_frames_multi_line_and_empty() {
        check(SseEvent::comment("keepalive"), ": keepalive\n\n");
        check(SseEvent::comment("a\nb"), ": a\n: b\n\n");
        check(SseEvent::comment(""), ":\n\n");
    }

    #[test]
    fn an_empty_event_writes_nothing() {
        check(SseEvent::default(), "");
    }

    #[test]
    fn line_breaks_and_nul_in_event_or_id_are_errors_nothing_appended() {
        let mut out = b"keep".to_vec();
        for (ev, err) in [
            (
                SseEvent::data("x").event("a\nb"),
                SseEncodeError::InvalidEvent { at: 1 },
            ),
            (
                SseEvent::data("x").event("ab\r"),
                SseEncodeError::InvalidEvent { at: 2 },
            ),
            (
                SseEvent::data("x").id("\0"),
                SseEncodeError::InvalidId { at: 0 },
            ),
            (
                SseEvent::data("x").id("1\r\n2"),
                SseEncodeError::InvalidId { at: 1 },
            ),
        ] {
            assert_eq!(sse_encode(&ev, &mut out), Err(err));
        }
        assert_eq!(out, b"keep", "nothing appended on error");
        assert_eq!(
            SseEncodeError::InvalidId { at: 1 }.to_string(),
            "SSE `id` has a line break or NUL at byte 1; it must be one line"
        );
    }

    #[test]
    fn round_trips_through_the_whatwg_interpretation_algorithm() {
        let datas = [
            "plain",
            "two\nlines",
            "cr\ronly",
            "crlf\r\nhere",
            "",
            "\n",
            "end\n",
            " lead",
            "a:b",
            "ü ✓",
        ];
        let mut stream = Vec::new();
        for (i, d) in datas.iter().enumerate() {
            let ev = SseEvent::data(*d).event(format!("t{i}")).id(i.to_string());
            sse_encode(&ev, &mut stream).unwrap();
            sse_encode(&SseEvent::comment("keepalive"), &mut stream).unwrap();
        }
        let got = parse(&String::from_utf8(stream).unwrap());
        let want: Vec<_> = datas
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let data = d.replace("\r\n", "\n").replace('\r', "\n");
                (format!("t{i}"), data, i.to_string())
            })
            .collect();
        assert_eq!(got, want);
    }
}

/// The examples of this crate's registry entries, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../sse_encode.md")]
#[doc = include_str!("../../../types/infra/SseEncodeError.md")]
pub struct RegistryExamples;
