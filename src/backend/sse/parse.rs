//! Complete events parsed into their name and data.

/// One parsed event: `event:` name if any and the `data:` lines joined with "\n".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// Parses complete events, reusing its buffers from one call (and one stream) to the
/// next, so counting a relayed stream allocates nothing per event.
#[derive(Debug, Default)]
pub struct EventParser {
    /// The fields of the event being parsed, until its blank line.
    event: String,
    has_event: bool,
    data: String,
    has_data: bool,
}

impl EventParser {
    /// Calls `f(event name, data)` for every event in `bytes` (lossy UTF-8), as
    /// [`parse_events`] returns them.
    pub fn each(&mut self, bytes: &[u8], mut f: impl FnMut(Option<&str>, &str)) {
        let text = String::from_utf8_lossy(bytes);
        let mut rest = text.strip_prefix('\u{feff}').unwrap_or(&text);
        while !rest.is_empty() {
            let (line, next) = match rest.find(['\r', '\n']) {
                Some(at) => {
                    let (line, terminator) = rest.split_at(at);
                    let next = terminator
                        .strip_prefix("\r\n")
                        .or_else(|| terminator.get(1..))
                        .unwrap_or("");
                    (line, next)
                }
                None => (rest, ""),
            };
            if line.is_empty() {
                self.dispatch(&mut f);
            } else {
                self.field(line);
            }
            rest = next;
        }
        self.dispatch(&mut f);
    }

    fn field(&mut self, line: &str) {
        if line.starts_with(':') {
            return;
        }
        let (name, value) = match line.split_once(':') {
            Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match name {
            "event" => {
                self.event.clear();
                self.event.push_str(value);
                self.has_event = !value.is_empty();
            }
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, f: &mut impl FnMut(Option<&str>, &str)) {
        if self.has_data {
            f(self.has_event.then_some(self.event.as_str()), &self.data);
        }
        self.data.clear();
        self.has_data = false;
        self.has_event = false;
    }
}

/// Parse complete events from bytes returned by `push` (lossy UTF-8). Events with no data
/// lines are skipped.
///
/// An event not closed by a blank line at the end of `bytes` is still returned: fed the
/// output of `take_rest`, this lets a stream cut short of its last blank line still count.
pub fn parse_events(bytes: &[u8]) -> Vec<SseEvent> {
    let mut events = Vec::new();
    EventParser::default().each(bytes, |event, data| {
        events.push(SseEvent {
            event: event.map(str::to_owned),
            data: data.to_owned(),
        })
    });
    events
}
