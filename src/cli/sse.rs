//! A reader of Server-Sent Events (the `text/event-stream` format) as chunks of a response
//! arrive: `taskd watch` reads the API's streams with it, and so do the integration tests.
//! Bytes are kept until an event is whole, so a character split between two chunks is not
//! garbled.

/// One event of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `id:` — the resume point (`Last-Event-ID`).
    pub id: Option<String>,
    /// `event:`, or `message` when absent.
    pub event: String,
    /// The `data:` lines, joined by newlines.
    pub data: String,
}

/// Splits a stream into events; feed it every chunk with [`SseParser::push`].
#[derive(Debug, Default)]
pub struct SseParser {
    buffer: Vec<u8>,
}

impl SseParser {
    /// The events this chunk completed (keep-alive comments are not events).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.buffer.extend(chunk.iter().filter(|&&b| b != b'\r'));
        // Only whole characters are read; a split one waits for the next chunk.
        let whole = match std::str::from_utf8(&self.buffer) {
            Ok(text) => text,
            Err(error) => std::str::from_utf8(&self.buffer[..error.valid_up_to()]).unwrap_or(""),
        };
        let mut events = Vec::new();
        let mut used = 0;
        while let Some(end) = whole[used..].find("\n\n") {
            let block = &whole[used..used + end];
            used += end + 2;
            let mut event = SseEvent {
                id: None,
                event: "message".to_owned(),
                data: String::new(),
            };
            let mut data: Vec<&str> = Vec::new();
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("id:") {
                    event.id = Some(value.trim().to_owned());
                } else if let Some(value) = line.strip_prefix("event:") {
                    event.event = value.trim().to_owned();
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push(value.strip_prefix(' ').unwrap_or(value));
                }
            }
            event.data = data.join("\n");
            if !data.is_empty() {
                events.push(event);
            }
        }
        // One move of the rest, however many events the chunk held.
        self.buffer.drain(..used);
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_are_read_whole() {
        let mut parser = SseParser::default();
        let stream =
            "id: 7\nevent: task\ndata: {\"m\":\"é\"}\n\n: keep-alive\n\ndata: a\ndata: b\n\n";
        let bytes = stream.as_bytes();
        // Split inside the two bytes of `é`.
        let split = stream.find('é').unwrap() + 1;
        let mut events = parser.push(&bytes[..split]);
        assert!(events.is_empty());
        events.extend(parser.push(&bytes[split..]));
        assert_eq!(
            events,
            vec![
                SseEvent {
                    id: Some("7".into()),
                    event: "task".into(),
                    data: "{\"m\":\"é\"}".into()
                },
                SseEvent {
                    id: None,
                    event: "message".into(),
                    data: "a\nb".into()
                },
            ]
        );
    }
}
