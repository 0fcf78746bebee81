use super::{data, ev};
use crate::backend::sse::{parse_events, EventParser};

#[test]
fn event_parser_reused_across_calls_gives_what_parse_events_gives() {
    let mut parser = EventParser::default();
    for bytes in [
        &b"event: a\ndata: 1\ndata: 2\n\n"[..],
        b"data: no name now\n\n",
        b"event: b\n\ndata: x\n\n",
        b"data: cut",
        b"\n\n",
    ] {
        let mut got = Vec::new();
        parser.each(bytes, |event, data| got.push(ev(event, data)));
        assert_eq!(got, parse_events(bytes), "{bytes:?}");
    }
}

#[test]
fn parses_data_event_and_comments() {
    let events = parse_events(
        b": comment\nevent: message_start\nid: 7\nretry: 10\ndata: {\"a\":1}\n\ndata: x\n\n",
    );
    assert_eq!(
        events,
        vec![ev(Some("message_start"), "{\"a\":1}"), data("x")]
    );
}

#[test]
fn joins_multiple_data_lines_and_strips_one_space() {
    let events = parse_events(b"data:  two spaces\ndata:none\ndata\ndata: \n\n");
    assert_eq!(events, vec![data(" two spaces\nnone\n\n")]);
}

#[test]
fn skips_events_without_data_and_resets_event_name() {
    let events = parse_events(b"event: ping\n\n: hi\n\ndata: after\n\n\n\n");
    assert_eq!(events, vec![data("after")]);
}

#[test]
fn empty_data_line_is_an_event_with_empty_data() {
    assert_eq!(parse_events(b"data:\n\n"), vec![data("")]);
    assert_eq!(parse_events(b"event:\ndata: a\n\n"), vec![data("a")]);
}

#[test]
fn parses_crlf_cr_and_bom() {
    let events = parse_events(b"\xef\xbb\xbfdata: a\r\n\r\ndata: b\r\rdata: c\r\n\n");
    assert_eq!(events, vec![data("a"), data("b"), data("c")]);
}

#[test]
fn field_names_are_exact() {
    let events = parse_events(b"Data: no\ndata : no\ndatum: no\ndata: yes\n\n");
    assert_eq!(events, vec![data("yes")]);
}

#[test]
fn unterminated_trailing_event_is_kept() {
    assert_eq!(parse_events(b"data: [DONE]"), vec![data("[DONE]")]);
    assert_eq!(parse_events(b"data: a\n"), vec![data("a")]);
    assert!(parse_events(b"").is_empty());
    assert!(parse_events(b"\n\r\n").is_empty());
}

#[test]
fn invalid_utf8_is_replaced() {
    assert_eq!(parse_events(b"data: \xffok\n\n"), vec![data("\u{fffd}ok")]);
}
