//! Closes one WebSocket connection, found by its id through the hub's index, with a close code and a reason, after what was already queued for it.
//!
//! The server-side "kick": an admin action, a revoked session, a user who
//! signed out elsewhere. The client is looked up by id in the hub's map (no
//! scan), the close frame is queued behind the messages already queued for
//! it (so a "you were signed out" sent just before arrives first), and from
//! then on sends to it fail with `SendError::Closed`. The connection's task
//! writes the close, waits for the peer's reply (bounded by `ws_handler`'s
//! close timeout) and unregisters it. Only codes an endpoint may send are
//! accepted (RFC 6455 section 7.4: 1000-1003, 1007-1014, and 3000-4999 for
//! applications), and a reason fits in a control frame (at most 123 bytes).
//!
//! # Example
//!
//! ```
//! use ws_close::{CloseError, ws_close};
//! use ws_hub::{HubConfig, WsHub};
//!
//! let hub = WsHub::new(HubConfig::default());
//! let client = hub.register(None).unwrap();
//! ws_close(&hub, client.id(), 4001, "signed out")?;
//! assert!(client.is_closed());
//! assert_eq!(ws_close(&hub, client.id(), 4001, "again"), Err(CloseError::Closing));
//! assert_eq!(ws_close(&hub, 999, 1000, ""), Err(CloseError::NotFound));
//! assert_eq!(ws_close(&hub, client.id(), 1006, ""), Err(CloseError::BadCode(1006)));
//! # Ok::<(), CloseError>(())
//! ```

use std::fmt;

use ws_hub::tungstenite::protocol::CloseFrame;
use ws_hub::tungstenite::protocol::frame::coding::CloseCode;
use ws_hub::{ClientId, WsHub};

/// Longest close reason, in bytes: a control frame's payload is at most 125
/// bytes, two of which are the code.
pub const MAX_REASON: usize = 123;

/// Closes client `id` of `hub` with `code` and `reason`, after what is
/// already queued for it.
pub fn ws_close(hub: &WsHub, id: ClientId, code: u16, reason: &str) -> Result<(), CloseError> {
    if !sendable(code) {
        return Err(CloseError::BadCode(code));
    }
    if reason.len() > MAX_REASON {
        return Err(CloseError::ReasonTooLong(reason.len()));
    }
    let client = hub.client(id).ok_or(CloseError::NotFound)?;
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    match client.close_after_queued(Some(frame)) {
        true => Ok(()),
        false => Err(CloseError::Closing),
    }
}

/// Whether an endpoint may send `code` in a close frame (RFC 6455 7.4.1:
/// not 1004-1006 or 1015, which are reserved or only reported locally, and
/// not the unassigned ranges).
fn sendable(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Why a connection was not closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseError {
    /// No connection with that id is registered (it never was, or it ended).
    NotFound,
    /// The connection is closing already.
    Closing,
    /// A code an endpoint may not send (RFC 6455 7.4): 1000-1003,
    /// 1007-1014 and 3000-4999 are.
    BadCode(u16),
    /// The reason is longer than [`MAX_REASON`] bytes (its length).
    ReasonTooLong(usize),
}

impl fmt::Display for CloseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseError::NotFound => f.write_str("no such connection"),
            CloseError::Closing => f.write_str("the connection is closing already"),
            CloseError::BadCode(code) => write!(
                f,
                "close code {code} may not be sent (1000-1003, 1007-1014 or 3000-4999)"
            ),
            CloseError::ReasonTooLong(len) => {
                write!(f, "close reason of {len} bytes is longer than {MAX_REASON}")
            }
        }
    }
}

impl std::error::Error for CloseError {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::{Context, Poll, Waker};
    use ws_hub::{Batch, HubConfig, Message, Outgoing, SendError};

    #[test]
    fn closes_after_what_was_queued_with_its_code_and_reason() {
        let hub = WsHub::new(HubConfig::default());
        let a = hub.register(None).unwrap();
        let b = hub.register(None).unwrap();
        a.try_send(Message::text("you were signed out")).unwrap();
        ws_close(&hub, a.id(), 4001, "signed out").unwrap();
        assert_eq!(a.try_send(Message::text("late")), Err(SendError::Closed));

        let cx = &mut Context::from_waker(Waker::noop());
        let mut batch = Batch::new();
        assert_eq!(
            a.poll_outgoing(cx, &mut batch),
            Poll::Ready(Outgoing::Messages)
        );
        assert_eq!(batch.to_messages(), [Message::text("you were signed out")]);
        batch.clear();
        let Poll::Ready(Outgoing::Close(Some(frame))) = a.poll_outgoing(cx, &mut batch) else {
            panic!("the close comes after the queued message");
        };
        assert_eq!(
            (u16::from(frame.code), frame.reason.as_str()),
            (4001, "signed out")
        );
        assert!(!b.is_closed(), "only that connection");
    }

    #[test]
    fn refuses_unknown_ids_closing_clients_bad_codes_and_long_reasons() {
        let hub = WsHub::new(HubConfig::default());
        let c = hub.register(None).unwrap();
        assert_eq!(
            ws_close(&hub, c.id() + 1, 1000, ""),
            Err(CloseError::NotFound)
        );
        for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            assert_eq!(
                ws_close(&hub, c.id(), code, ""),
                Err(CloseError::BadCode(code))
            );
        }
        let long = "x".repeat(MAX_REASON + 1);
        assert_eq!(
            ws_close(&hub, c.id(), 1000, &long),
            Err(CloseError::ReasonTooLong(MAX_REASON + 1))
        );
        assert!(!c.is_closed(), "a refused close leaves the connection open");
        assert_eq!(ws_close(&hub, c.id(), 1000, &long[..MAX_REASON]), Ok(()));
        assert_eq!(ws_close(&hub, c.id(), 1000, ""), Err(CloseError::Closing));
        hub.unregister(c.id());
        assert_eq!(ws_close(&hub, c.id(), 1000, ""), Err(CloseError::NotFound));
    }
}

/// The examples of this crate's registry entries, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../ws_close.md")]
#[doc = include_str!("../../../types/infra/CloseError.md")]
pub struct RegistryExamples;
