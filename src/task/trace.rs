//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): the `traceparent` a task was
//! submitted under, kept with the task so that each of its attempts joins the same trace.
//!
//! Parsing follows the specification's rule for a receiver: a header that does not parse is
//! ignored (the caller then starts a new trace), never refused. No HTTP types here: the api
//! hands the header's text in, the store keeps the text form.

use std::fmt;

use sha2::{Digest, Sha256};

use super::TaskId;

/// The longest `tracestate` kept: the specification's 32 members of at most 256 characters
/// would allow far more, but it asks vendors to keep 512 and to drop whole values beyond.
pub const MAX_TRACESTATE: usize = 512;

/// One span's place in one trace: the parsed `traceparent` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// Bit 0: `sampled`, the caller's wish that the trace be recorded.
    pub flags: u8,
}

impl TraceParent {
    /// A `traceparent` header's value, if it is well formed; `None` says: start a new trace.
    ///
    /// Version `00` must be exactly `00-<32 hex>-<16 hex>-<2 hex>`. A later version (not
    /// `ff`) may carry more after the flags, behind a `-`; its first four fields are read as
    /// version `00`'s, as the specification asks. Hex is lowercase; all-zero ids are invalid.
    pub fn parse(header: &str) -> Option<TraceParent> {
        let header = header.trim_matches([' ', '\t']);
        let bytes = header.as_bytes();
        if !header.is_ascii() || bytes.len() < 55 || !is_lower_hex(&header[..2]) {
            return None;
        }
        let version = &header[..2];
        if version == "ff" || (version == "00" && bytes.len() != 55) {
            return None;
        }
        if bytes.len() > 55 && bytes[55] != b'-' {
            return None;
        }
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return None;
        }
        let trace_id: [u8; 16] = decode(&header[3..35])?;
        let span_id: [u8; 8] = decode(&header[36..52])?;
        let [flags] = decode::<1>(&header[53..55])?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id,
            span_id,
            flags,
        })
    }

    /// The root of a new trace, sampled: fresh random ids.
    pub fn new_root() -> TraceParent {
        TraceParent {
            trace_id: nonzero(|| fastrand::u128(..).to_be_bytes()),
            span_id: new_span_id(),
            flags: 1,
        }
    }

    /// The context of a child span `span_id` of this one: same trace, same flags.
    pub fn child(&self, span_id: [u8; 8]) -> TraceParent {
        TraceParent { span_id, ..*self }
    }

    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    pub fn trace_id_hex(&self) -> String {
        hex::encode(self.trace_id)
    }

    pub fn span_id_hex(&self) -> String {
        hex::encode(self.span_id)
    }
}

impl fmt::Display for TraceParent {
    /// The header's version `00` form, which is what taskd sends whatever version came in.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id_hex(),
            self.span_id_hex(),
            self.flags
        )
    }
}

/// A fresh random span id (never all zeros).
pub fn new_span_id() -> [u8; 8] {
    nonzero(|| fastrand::u64(..).to_be_bytes())
}

/// The trace context stored with a task: the span its attempts are children of, and the
/// caller's `tracestate`, passed on as it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub parent: TraceParent,
    pub state: Option<String>,
}

impl TraceContext {
    /// From the stored text forms; a value that no longer parses is no context at all.
    pub fn from_stored(traceparent: Option<&str>, tracestate: Option<String>) -> Option<Self> {
        let parent = TraceParent::parse(traceparent?)?;
        Some(TraceContext {
            parent,
            state: tracestate,
        })
    }

    /// The headers that carry this context onward: `traceparent`, and `tracestate` if any.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![("traceparent", self.parent.to_string())];
        if let Some(state) = &self.state {
            headers.push(("tracestate", state.clone()));
        }
        headers
    }

    /// The span of attempt `attempt` of task `id`: a child of the stored span whose id is
    /// derived from the task and the attempt, so whichever node ends the attempt (or a remote
    /// worker's lease on another) names the same span without storing it.
    pub fn attempt(&self, id: TaskId, attempt: u32) -> TraceParent {
        let digest = Sha256::new()
            .chain_update(id.to_string().as_bytes())
            .chain_update(attempt.to_be_bytes())
            .finalize();
        let mut span_id = [0u8; 8];
        span_id.copy_from_slice(&digest[..8]);
        if span_id == [0; 8] {
            span_id[7] = 1;
        }
        self.parent.child(span_id)
    }
}

/// A `tracestate` header's value as it is kept: printable ASCII, at most
/// [`MAX_TRACESTATE`] characters; anything else is dropped whole (the spec allows that).
pub fn parse_tracestate(header: &str) -> Option<String> {
    let header = header.trim_matches([' ', '\t']);
    let fits = !header.is_empty()
        && header.len() <= MAX_TRACESTATE
        && header.bytes().all(|b| (0x20..=0x7e).contains(&b));
    fits.then(|| header.to_owned())
}

fn is_lower_hex(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn decode<const N: usize>(text: &str) -> Option<[u8; N]> {
    if !is_lower_hex(text) {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

fn nonzero<const N: usize>(make: impl Fn() -> [u8; N]) -> [u8; N] {
    loop {
        let id = make();
        if id != [0; N] {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_specifications_example_round_trips() {
        let parsed = TraceParent::parse(EXAMPLE).expect("valid");
        assert_eq!(parsed.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parsed.span_id_hex(), "00f067aa0ba902b7");
        assert!(parsed.sampled());
        assert_eq!(parsed.to_string(), EXAMPLE);
    }

    #[test]
    fn malformed_headers_are_ignored() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473x-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_later_version_is_read_as_version_00() {
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more";
        let parsed = TraceParent::parse(later).expect("a later version parses");
        assert!(!parsed.sampled());
        assert_eq!(
            parsed.to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        );
        let glued = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00more";
        assert_eq!(TraceParent::parse(glued), None);
    }

    #[test]
    fn attempt_spans_are_stable_children() {
        let context = TraceContext {
            parent: TraceParent::parse(EXAMPLE).unwrap(),
            state: None,
        };
        let id = TaskId::new();
        let first = context.attempt(id, 1);
        assert_eq!(first.trace_id, context.parent.trace_id);
        assert_eq!(first, context.attempt(id, 1));
        assert_ne!(first.span_id, context.attempt(id, 2).span_id);
        assert_ne!(first.span_id, context.parent.span_id);
    }

    #[test]
    fn tracestate_is_kept_only_when_it_fits() {
        assert_eq!(parse_tracestate(" a=1,b=2 ").as_deref(), Some("a=1,b=2"));
        assert_eq!(parse_tracestate(""), None);
        assert_eq!(parse_tracestate(&"a".repeat(MAX_TRACESTATE + 1)), None);
        assert_eq!(parse_tracestate("a=\u{e9}"), None);
    }
}
