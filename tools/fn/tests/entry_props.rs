//! Property tests of the entry parser (`fn_tool::entry::parse`): arbitrary
//! and mutated files never panic and every problem points into the file;
//! any string written into a field reads back as written.

use std::cell::Cell;
use std::path::Path;

use fn_tool::entry::{make_id, parse};
use proptest::prelude::*;

const PATH: &str = "crates/ws_send/ws_send.md";

/// A valid function entry; `DESCRIPTION` and `EXTRA` are replaced by the tests.
const GOOD: &str = "---
name: ws_send
kind: function
lang: rust
domain: infra
version: \"0.1.0\"
purity: impure
signature: \"pub fn ws_send(client: &WsClient, msg: Bytes) -> Result<(), SendError>\"
description: DESCRIPTION
tags: [websocket, send]
uses_functions: []
uses_types: [WsClient_rust_infra]
returns: []
returns_optional: false
error_type: \"\"
imports: [tokio]
params:
  - name: client
    desc: the target.
output: Ok when queued.
tested: true
tests:
  - queues
test_file_path: crates/ws_send/src/lib.rs
file_path: crates/ws_send/src/lib.rs
source_repo: EXTRA
---

## Example

```rust
ws_send(&c, b)?;
```

## Notes

Never blocks.
";

/// The line of `description:` in `GOOD`.
const DESCRIPTION_LINE: usize = 9;

/// `s` as a YAML double-quoted scalar: printable ASCII as it is, everything
/// else escaped, so any string survives.
fn yaml_quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            c if u32::from(c) <= 0xFFFF => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push_str(&format!("\\U{:08X}", u32::from(c))),
        }
    }
    out.push('"');
    out
}

fn good(description: &str, extra: &str) -> String {
    GOOD.replace("DESCRIPTION", description)
        .replace("EXTRA", extra)
}

/// Parses `bytes` and checks what holds for every input: no panic, and
/// every problem names this file, a line inside it, and says something.
/// `None` when the file has problems.
fn parse_checked(bytes: &[u8]) -> Result<Option<fn_tool::entry::Entry>, TestCaseError> {
    let lines = bytes.split(|&b| b == b'\n').count().max(1);
    match parse(Path::new(PATH), bytes) {
        Ok(e) => {
            prop_assert_eq!(&e.path, Path::new(PATH));
            prop_assert_eq!(e.id(), make_id(&e.name, &e.lang, &e.domain));
            Ok(Some(e))
        }
        Err(problems) => {
            prop_assert!(!problems.is_empty(), "an error has a problem");
            for p in &problems {
                prop_assert_eq!(&p.path, Path::new(PATH));
                prop_assert!(
                    (1..=lines + 1).contains(&p.line),
                    "line {} of {}: {}",
                    p.line,
                    lines,
                    p.message
                );
                prop_assert!(!p.message.is_empty());
            }
            Ok(None)
        }
    }
}

#[test]
fn arbitrary_bytes_never_panic_and_problems_point_into_the_file() {
    let text = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        "(?s)---\n.{0,120}\n---\n.{0,20}".prop_map(String::into_bytes),
    ];
    proptest!(ProptestConfig::with_cases(512), |(bytes in text)| {
        parse_checked(&bytes)?;
    });
}

#[test]
fn mutated_entries_never_panic_and_problems_point_into_the_file() {
    let base = good("Queues one message for one client.", "somewhere").into_bytes();
    let edit = (
        any::<prop::sample::Index>(),
        0u8..3,
        prop::sample::select(b"-:[]{}\"' \n\t#,|>&*!%@`abz019".to_vec()),
    );
    let (parsed, refused) = (Cell::new(0), Cell::new(0));
    proptest!(ProptestConfig::with_cases(512), |(edits in prop::collection::vec(edit, 1..5))| {
        let mut b = base.clone();
        for (at, op, c) in edits {
            let i = at.index(b.len() + 1);
            match op {
                0 if i < b.len() => b[i] = c,
                1 => b.insert(i, c),
                _ if i < b.len() => {
                    b.remove(i);
                }
                _ => b.push(c),
            }
        }
        let counter = if parse_checked(&b)?.is_some() { &parsed } else { &refused };
        counter.set(counter.get() + 1);
    });
    // The edits reach both sides: entries that still parse, and problems.
    assert!(
        parsed.get() > 0 && refused.get() > 0,
        "{parsed:?} {refused:?}"
    );
}

#[test]
fn any_string_in_a_field_reads_back_as_written() {
    let text = prop_oneof!["(?s).{0,60}", "[ a-z\"\\\\:#\\-\\[\\]{}]{0,30}"];
    proptest!(ProptestConfig::with_cases(512), |(description in text.clone(), extra in text)| {
        let file = good(&yaml_quoted(&description), &yaml_quoted(&extra));
        let got = parse(Path::new(PATH), file.as_bytes());
        if description.trim().is_empty() {
            let problems = got.expect_err("an empty description is a problem");
            prop_assert!(
                problems.iter().any(|p| p.line == DESCRIPTION_LINE
                    && p.message.contains("description")),
                "{:?}",
                problems
            );
        } else {
            let e = got.map_err(|p| TestCaseError::fail(format!("{p:?}\n{file}")))?;
            // Required string fields are trimmed; unknown keys are kept as they are.
            prop_assert_eq!(e.description.as_str(), description.trim());
            prop_assert_eq!(&e.extra["source_repo"], &serde_json::Value::from(extra));
            prop_assert_eq!(e.name.as_str(), "ws_send");
            prop_assert_eq!(e.tags.clone(), vec!["websocket".to_string(), "send".to_string()]);
        }
    });
}
