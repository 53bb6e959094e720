//! Checks a name a client sent (topic, room, user, event name or Last-Event-ID) against its kind's limits: not empty, bounded length, no control characters.
//!
//! Names from requests and messages end up as map keys, in log lines and in
//! SSE field lines, so every crate that takes one checks it here, with the
//! same rules:
//!
//! | kind | at most | characters |
//! |---|---|---|
//! | [`NameKind::Topic`] | [`MAX_TOPIC_NAME`] = 128 bytes | any but control characters |
//! | [`NameKind::Room`] | [`MAX_ROOM_NAME`] = 128 bytes | any but control characters |
//! | [`NameKind::User`] | [`MAX_USER_NAME`] = 128 bytes | any but control characters |
//! | [`NameKind::Event`] | [`MAX_EVENT_NAME`] = 64 bytes | any but control characters |
//! | [`NameKind::LastEventId`] | [`MAX_LAST_EVENT_ID`] = 64 bytes | printable ASCII (space to `~`) |
//!
//! Control characters are Unicode's (`char::is_control`: C0, DEL and C1), so
//! a name never holds a CR, LF or NUL and never breaks a `text/event-stream`
//! line or a log line. No name is empty. [`MAX_TOPICS_PER_STREAM`] bounds how
//! many topics one SSE stream may name.
//!
//! [`name_validate_bytes`] checks raw bytes (a header value) and gives the
//! text back; bytes that are not UTF-8 are an error at the first bad byte.
//!
//! # Example
//!
//! ```
//! use name_validate::{name_validate, NameError, NameKind};
//!
//! assert_eq!(name_validate(NameKind::Room, "public-lobby"), Ok(()));
//! let long = "r".repeat(300);
//! let err = name_validate(NameKind::Room, &long).unwrap_err();
//! assert_eq!(err.to_string(), "room name is 300 bytes, at most 128");
//! assert_eq!(
//!     name_validate(NameKind::Topic, "a\nb"),
//!     Err(NameError::ControlChar { kind: NameKind::Topic, at: 1 })
//! );
//! assert!(name_validate(NameKind::LastEventId, "42").is_ok());
//! assert!(name_validate(NameKind::LastEventId, "4é").is_err());
//! ```

use std::fmt;

/// Longest topic name, in bytes.
pub const MAX_TOPIC_NAME: usize = 128;
/// Longest room name, in bytes.
pub const MAX_ROOM_NAME: usize = 128;
/// Longest user name, in bytes.
pub const MAX_USER_NAME: usize = 128;
/// Longest event name (the SSE `event:` field, a ws event type), in bytes.
pub const MAX_EVENT_NAME: usize = 64;
/// Longest `Last-Event-ID`, in bytes: room for any id this registry issues
/// (a `u64` is at most 20 digits) and for a client's own id scheme.
pub const MAX_LAST_EVENT_ID: usize = 64;
/// Most topics one SSE stream may name (`?topic=` repeated): a page rarely
/// needs more than a handful, and each one is a subscription entry and a
/// replay-buffer scan on resume.
pub const MAX_TOPICS_PER_STREAM: usize = 16;

/// What a name names; each kind has its own length limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NameKind {
    /// An SSE broker topic (`?topic=`, a publish topic).
    Topic,
    /// A WebSocket hub room.
    Room,
    /// A user name (an identity, a `?user=` target).
    User,
    /// An event name: the SSE `event:` field, an event type.
    Event,
    /// The `Last-Event-ID` a resuming SSE client sends (header or `?lastEventId=`).
    LastEventId,
}

impl NameKind {
    /// Every kind, in declaration order.
    pub const ALL: [NameKind; 5] = [
        NameKind::Topic,
        NameKind::Room,
        NameKind::User,
        NameKind::Event,
        NameKind::LastEventId,
    ];

    /// The longest name of this kind, in bytes.
    pub const fn max_len(self) -> usize {
        match self {
            NameKind::Topic => MAX_TOPIC_NAME,
            NameKind::Room => MAX_ROOM_NAME,
            NameKind::User => MAX_USER_NAME,
            NameKind::Event => MAX_EVENT_NAME,
            NameKind::LastEventId => MAX_LAST_EVENT_ID,
        }
    }

    /// What error messages call it: `topic name`, `room name`, `user name`,
    /// `event name`, `Last-Event-ID`.
    pub const fn label(self) -> &'static str {
        match self {
            NameKind::Topic => "topic name",
            NameKind::Room => "room name",
            NameKind::User => "user name",
            NameKind::Event => "event name",
            NameKind::LastEventId => "Last-Event-ID",
        }
    }
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Why a name was refused: which kind of name, and what is wrong with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    /// The name is empty.
    Empty {
        /// What the name names.
        kind: NameKind,
    },
    /// The name is longer than its kind allows.
    TooLong {
        /// What the name names.
        kind: NameKind,
        /// Its length, in bytes.
        len: usize,
        /// The limit, in bytes ([`NameKind::max_len`]).
        max: usize,
    },
    /// A control character (CR, LF, NUL, tab, DEL, C1, ...) at byte `at`.
    ControlChar {
        /// What the name names.
        kind: NameKind,
        /// Byte offset of the character.
        at: usize,
    },
    /// A character outside printable ASCII at byte `at`, in a kind that allows
    /// only printable ASCII ([`NameKind::LastEventId`]).
    NotPrintableAscii {
        /// What the name names.
        kind: NameKind,
        /// Byte offset of the character.
        at: usize,
    },
    /// The bytes are not UTF-8 from byte `at` on ([`name_validate_bytes`] only).
    NotUtf8 {
        /// What the name names.
        kind: NameKind,
        /// Byte offset of the first byte that is not UTF-8.
        at: usize,
    },
}

impl NameError {
    /// What the refused name names.
    pub fn kind(&self) -> NameKind {
        match *self {
            NameError::Empty { kind }
            | NameError::TooLong { kind, .. }
            | NameError::ControlChar { kind, .. }
            | NameError::NotPrintableAscii { kind, .. }
            | NameError::NotUtf8 { kind, .. } => kind,
        }
    }
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            NameError::Empty { kind } => write!(f, "{kind} is empty"),
            NameError::TooLong { kind, len, max } => {
                write!(f, "{kind} is {len} bytes, at most {max}")
            }
            NameError::ControlChar { kind, at } => {
                write!(f, "{kind} has a control character at byte {at}")
            }
            NameError::NotPrintableAscii { kind, at } => write!(
                f,
                "{kind} has a character outside printable ASCII at byte {at}"
            ),
            NameError::NotUtf8 { kind, at } => {
                write!(f, "{kind} is not UTF-8 at byte {at}")
            }
        }
    }
}

impl std::error::Error for NameError {}

/// Checks `value` as a name of `kind`: not empty, at most
/// [`NameKind::max_len`] bytes, no control character, and printable ASCII
/// only for [`NameKind::LastEventId`].
pub fn name_validate(kind: NameKind, value: &str) -> Result<(), NameError> {
    check(kind, value.as_bytes()).map(|_| ())
}

/// [`name_validate`] for raw bytes (such as a header value): the text when
/// the bytes are a valid name, else the first problem, bytes that are not
/// UTF-8 included ([`NameError::NotPrintableAscii`] for a `Last-Event-ID`,
/// [`NameError::NotUtf8`] for other kinds).
pub fn name_validate_bytes(kind: NameKind, value: &[u8]) -> Result<&str, NameError> {
    check(kind, value)
}

fn check(kind: NameKind, bytes: &[u8]) -> Result<&str, NameError> {
    if bytes.is_empty() {
        return Err(NameError::Empty { kind });
    }
    let max = kind.max_len();
    if bytes.len() > max {
        return Err(NameError::TooLong {
            kind,
            len: bytes.len(),
            max,
        });
    }
    let (text, bad_utf8) = match std::str::from_utf8(bytes) {
        Ok(s) => (s, None),
        Err(e) => {
            let at = e.valid_up_to();
            // The prefix up to `valid_up_to` is UTF-8 by definition.
            (
                std::str::from_utf8(&bytes[..at]).unwrap_or_default(),
                Some(at),
            )
        }
    };
    for (at, c) in text.char_indices() {
        if c.is_control() {
            return Err(NameError::ControlChar { kind, at });
        }
        if kind == NameKind::LastEventId && !c.is_ascii() {
            return Err(NameError::NotPrintableAscii { kind, at });
        }
    }
    match bad_utf8 {
        None => Ok(text),
        Some(at) if kind == NameKind::LastEventId => Err(NameError::NotPrintableAscii { kind, at }),
        Some(at) => Err(NameError::NotUtf8 { kind, at }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_kind_has_its_limit_and_refuses_empty_and_too_long() {
        for kind in NameKind::ALL {
            let max = kind.max_len();
            assert_eq!(name_validate(kind, ""), Err(NameError::Empty { kind }));
            assert_eq!(name_validate(kind, &"a".repeat(max)), Ok(()), "{kind}");
            assert_eq!(
                name_validate(kind, &"a".repeat(max + 1)),
                Err(NameError::TooLong {
                    kind,
                    len: max + 1,
                    max
                })
            );
        }
        assert_eq!(NameKind::Topic.max_len(), 128);
        assert_eq!(NameKind::Room.max_len(), 128);
        assert_eq!(NameKind::User.max_len(), 128);
        assert_eq!(NameKind::Event.max_len(), 64);
        assert_eq!(NameKind::LastEventId.max_len(), 64);
        // The limit counts bytes, not characters.
        assert!(name_validate(NameKind::Event, &"é".repeat(33)).is_err());
        assert_eq!(name_validate(NameKind::Event, &"é".repeat(32)), Ok(()));
    }

    #[test]
    fn control_characters_are_refused_with_their_byte() {
        for kind in NameKind::ALL {
            for (name, at) in [
                ("a\nb", 1),
                ("\r", 0),
                ("ab\0", 2),
                ("tab\there", 3),
                ("del\u{7f}", 3),
            ] {
                assert_eq!(
                    name_validate(kind, name),
                    Err(NameError::ControlChar { kind, at }),
                    "{kind} {name:?}"
                );
            }
        }
        // C1 controls are control characters too.
        assert_eq!(
            name_validate(NameKind::Room, "éa\u{85}"),
            Err(NameError::ControlChar {
                kind: NameKind::Room,
                at: 3
            })
        );
        assert_eq!(name_validate(NameKind::Room, "café lobby ☕"), Ok(()));
    }

    #[test]
    fn last_event_id_is_printable_ascii_only() {
        let k = NameKind::LastEventId;
        assert_eq!(name_validate(k, "42"), Ok(()));
        assert_eq!(name_validate(k, " 7 "), Ok(()));
        assert_eq!(name_validate(k, "abc-DEF_~!"), Ok(()));
        assert_eq!(
            name_validate(k, "1é"),
            Err(NameError::NotPrintableAscii { kind: k, at: 1 })
        );
        assert_eq!(
            name_validate_bytes(k, b"12\xff"),
            Err(NameError::NotPrintableAscii { kind: k, at: 2 })
        );
        assert_eq!(name_validate_bytes(k, b"12"), Ok("12"));
    }

    #[test]
    fn bytes_that_are_not_utf8_are_refused_at_the_first_bad_byte() {
        assert_eq!(
            name_validate_bytes(NameKind::Topic, "tö".as_bytes()),
            Ok("tö")
        );
        assert_eq!(
            name_validate_bytes(NameKind::Topic, b"ab\xc3"),
            Err(NameError::NotUtf8 {
                kind: NameKind::Topic,
                at: 2
            })
        );
        // A control character before the bad byte is the first problem.
        assert_eq!(
            name_validate_bytes(NameKind::Topic, b"\n\xff"),
            Err(NameError::ControlChar {
                kind: NameKind::Topic,
                at: 0
            })
        );
        assert_eq!(
            name_validate_bytes(NameKind::Topic, &[0xff; 200]),
            Err(NameError::TooLong {
                kind: NameKind::Topic,
                len: 200,
                max: 128
            })
        );
    }

    #[test]
    fn messages_name_the_kind_and_the_problem() {
        let room = NameKind::Room;
        assert_eq!(
            NameError::TooLong {
                kind: room,
                len: 300,
                max: 128
            }
            .to_string(),
            "room name is 300 bytes, at most 128"
        );
        assert_eq!(
            NameError::Empty {
                kind: NameKind::Topic
            }
            .to_string(),
            "topic name is empty"
        );
        assert_eq!(
            NameError::ControlChar {
                kind: NameKind::Event,
                at: 3
            }
            .to_string(),
            "event name has a control character at byte 3"
        );
        assert_eq!(
            NameError::NotPrintableAscii {
                kind: NameKind::LastEventId,
                at: 0
            }
            .to_string(),
            "Last-Event-ID has a character outside printable ASCII at byte 0"
        );
        assert_eq!(
            NameError::NotUtf8 {
                kind: NameKind::User,
                at: 5
            }
            .to_string(),
            "user name is not UTF-8 at byte 5"
        );
        assert_eq!(NameError::Empty { kind: room }.kind(), room);
    }

    fn kind() -> impl Strategy<Value = NameKind> {
        prop::sample::select(NameKind::ALL.to_vec())
    }

    /// Any text, and text made mostly of the characters the rules are about.
    fn names() -> impl Strategy<Value = String> {
        prop_oneof![
            "(?s).{0,140}",
            "[a-z0-9 ~\\x00-\\x1f\\x7f\\u{80}-\\u{9f}é☕]{0,140}",
        ]
    }

    /// What the rules say about `value`, written out independently.
    fn expected(kind: NameKind, value: &str) -> bool {
        !value.is_empty()
            && value.len() <= kind.max_len()
            && !value.chars().any(char::is_control)
            && (kind != NameKind::LastEventId || value.bytes().all(|b| (0x20..0x7f).contains(&b)))
    }

    #[test]
    fn arbitrary_strings_are_accepted_exactly_when_the_rules_allow() {
        proptest!(ProptestConfig::with_cases(1024), |(kind in kind(), value in names())| {
            let got = name_validate(kind, &value);
            prop_assert_eq!(got.is_ok(), expected(kind, &value), "{:?} {:?}", kind, value);
            if let Err(e) = got {
                prop_assert_eq!(e.kind(), kind);
                prop_assert!(!e.to_string().is_empty());
                match e {
                    NameError::Empty { .. } => prop_assert!(value.is_empty()),
                    NameError::TooLong { len, max, .. } => {
                        prop_assert_eq!(len, value.len());
                        prop_assert!(len > max);
                    }
                    NameError::ControlChar { at, .. } => {
                        let c = value[at..].chars().next();
                        prop_assert!(c.is_some_and(char::is_control));
                        prop_assert!(!value[..at].chars().any(char::is_control));
                    }
                    NameError::NotPrintableAscii { at, .. } => {
                        prop_assert_eq!(kind, NameKind::LastEventId);
                        prop_assert!(!value.as_bytes()[at].is_ascii());
                    }
                    NameError::NotUtf8 { .. } => prop_assert!(false, "a &str is UTF-8"),
                }
            }
            // The byte form agrees and gives the same text back.
            prop_assert_eq!(
                name_validate_bytes(kind, value.as_bytes()),
                got.map(|()| value.as_str())
            );
        });
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_agree_with_the_str_form() {
        let bytes = prop::collection::vec(any::<u8>(), 0..140);
        proptest!(ProptestConfig::with_cases(1024), |(kind in kind(), value in bytes)| {
            let got = name_validate_bytes(kind, &value);
            match std::str::from_utf8(&value) {
                Ok(s) => prop_assert_eq!(got, name_validate(kind, s).map(|()| s)),
                Err(e) => {
                    // The first problem: the length, else one in the UTF-8
                    // prefix, else the first byte that is not UTF-8.
                    let valid = e.valid_up_to();
                    let prefix = std::str::from_utf8(&value[..valid]).expect("UTF-8 prefix");
                    let want = if value.len() > kind.max_len() {
                        NameError::TooLong { kind, len: value.len(), max: kind.max_len() }
                    } else {
                        match name_validate(kind, prefix) {
                            Err(first) if !matches!(first, NameError::Empty { .. }) => first,
                            _ if kind == NameKind::LastEventId => {
                                NameError::NotPrintableAscii { kind, at: valid }
                            }
                            _ => NameError::NotUtf8 { kind, at: valid },
                        }
                    };
                    prop_assert_eq!(got, Err(want));
                }
            }
        });
    }
}

/// The examples of this crate's registry entries, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../name_validate.md")]
#[doc = include_str!("../../../types/infra/NameError.md")]
#[doc = include_str!("../../../types/infra/NameKind.md")]
pub struct RegistryExamples;
