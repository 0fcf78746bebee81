//! Remote media URLs, refused unless the operator allows them, in both dialects.

use super::*;

#[test]
fn openai_remote_media_shapes_are_refused() {
    let cases = [
        (
            json!({"type": "image_url", "image_url": {"url": "https://e.com/a.png"}}),
            "image_url",
        ),
        (
            json!({"type": "image_url", "image_url": {"url": "http://e.com/a.png", "detail": "low"}}),
            "image_url",
        ),
        (
            json!({"type": "image_url", "image_url": "https://e.com/a.png"}),
            "image_url",
        ),
        (
            json!({"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}),
            "image_url",
        ),
        (
            json!({"type": "image_url", "image_url": {"url": "/etc/passwd"}}),
            "image_url",
        ),
        (
            json!({"type": "input_audio", "input_audio": {"url": "https://e.com/a.wav"}}),
            "input_audio",
        ),
        (
            json!({"type": "input_audio", "input_audio": {"data": "https://e.com/a.wav", "format": "wav"}}),
            "input_audio",
        ),
        (
            json!({"type": "input_audio", "input_audio": {"data": " HTTP://e.com/a.wav"}}),
            "input_audio",
        ),
        (
            json!({"type": "file", "file": {"url": "https://e.com/a.pdf"}}),
            "file",
        ),
        (
            json!({"type": "file", "file": {"file_url": "https://e.com/a.pdf"}}),
            "file",
        ),
        (
            json!({"type": "file", "file": {"file_data": "https://e.com/a.pdf", "filename": "a.pdf"}}),
            "file",
        ),
        (
            json!({"type": "video_url", "video_url": {"url": "https://e.com/v.mp4"}}),
            "video_url",
        ),
        (
            json!({"type": "audio_url", "audio_url": {"url": "s3://bucket/a.wav"}}),
            "audio_url",
        ),
        (
            json!({"type": "thing_url", "thing_url": "ftp://e.com/x"}),
            "thing_url",
        ),
        (
            json!({"type": "image", "url": "https://e.com/a.png"}),
            "url",
        ),
        (
            json!({"type": "image", "image": {"url": "https://e.com/a.png"}}),
            "image",
        ),
    ];
    for (part, key) in cases {
        let reason = refused(Dialect::OpenAi, with_part(part.clone()));
        assert_eq!(
            reason,
            format!(
                "remote media URL in messages[1].content[1] ({key}); only data: URLs are accepted"
            ),
            "{part}"
        );
    }
}

#[test]
fn openai_escaped_url_is_read_decoded() {
    let raw = r#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"u\u0072l":"h\u0074tps:\/\/e.com"}}]}]}"#;
    let reason = shape_with(Dialect::OpenAi, raw, &policy()).unwrap_err();
    assert_eq!(
        reason,
        "remote media URL in messages[0].content[0] (image_url); only data: URLs are accepted"
    );
}

#[test]
fn openai_inline_media_and_urls_in_text_pass() {
    let parts = json!([
        {"type": "text", "text": "what is at https://e.com/a.png ?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
        {"type": "image_url", "image_url": "DATA:image/png;base64,iVBORw0KGgo="},
        {"type": "input_audio", "input_audio": {"data": "UklGRiQAAABXQVZF", "format": "wav"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}},
        {"type": "file", "file": {"file_id": "file-abc"}},
        {"type": "video_url", "video_url": {"url": "data:video/mp4;base64,AAAA"}},
        {"type": "refusal", "refusal": "no"},
    ]);
    let request = json!({"messages": [{"role": "user", "content": parts}], "max_tokens": 1});
    assert_eq!(
        openai(request.clone()),
        with_forced(Dialect::OpenAi, request)
    );
}

#[test]
fn openai_remote_media_allowed_by_the_operator() {
    let mut p = policy();
    p.allow_remote_media = true;
    let request =
        with_part(json!({"type": "image_url", "image_url": {"url": "https://e.com/a.png"}}));
    passes_with(Dialect::OpenAi, request, &p);
}

#[test]
fn openai_content_as_a_single_object_is_checked() {
    let request = json!({"messages": [{"role": "user", "content": {"type": "image_url", "image_url": {"url": "https://e.com"}}}]});
    assert_eq!(
        refused(Dialect::OpenAi, request),
        "remote media URL in messages[0].content (image_url); only data: URLs are accepted"
    );
}

#[test]
fn openai_duplicate_content_keys_are_all_checked() {
    let raw = r#"{"messages":[{"role":"user","content":"hi","content":[{"type":"image_url","image_url":"https://e.com"}]}]}"#;
    assert!(shape_with(Dialect::OpenAi, raw, &policy())
        .unwrap_err()
        .reason()
        .starts_with("remote media URL in messages[0].content[0]"));
}

fn with_block(block: Value) -> Value {
    json!({"messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": [{"type": "text", "text": "look"}, block]},
    ]})
}

const URL_SOURCE: &str = "only base64, text or content sources are accepted";

#[test]
fn anthropic_url_sources_are_refused() {
    let cases = [
        json!({"type": "image", "source": {"type": "url", "url": "https://e.com/a.png"}}),
        json!({"type": "image", "source": {"type": "URL"}}),
        json!({"type": "document", "source": {"type": "url", "url": "https://e.com/a.pdf"}}),
        json!({"type": "image", "source": {"type": "base64", "url": "https://e.com/a.png"}}),
        json!({"type": "image", "source": {"type": "file", "file_url": "https://e.com/a.png"}}),
    ];
    for block in cases {
        let reason = refused(Dialect::Anthropic, with_block(block.clone()));
        assert_eq!(
            reason,
            format!("remote media URL in messages[2].content[1] (url source); {URL_SOURCE}"),
            "{block}"
        );
    }
}

#[test]
fn anthropic_nested_url_sources_are_refused() {
    let tool_result = json!({"type": "tool_result", "tool_use_id": "t1", "content": [
        {"type": "text", "text": "here"},
        {"type": "image", "source": {"type": "url", "url": "https://e.com/a.png"}},
    ]});
    assert_eq!(
        refused(Dialect::Anthropic, with_block(tool_result)),
        format!("remote media URL in messages[2].content[1].content[1] (url source); {URL_SOURCE}")
    );
    let document = json!({"type": "document", "source": {"type": "content", "content": [
        {"type": "image", "source": {"type": "url", "url": "https://e.com/a.png"}},
    ]}});
    assert_eq!(
        refused(Dialect::Anthropic, with_block(document)),
        format!("remote media URL in messages[2].content[1].source.content[0] (url source); {URL_SOURCE}")
    );
    let system = json!({"system": [
        {"type": "text", "text": "x"},
        {"type": "image", "source": {"type": "url", "url": "https://e.com"}},
    ], "messages": []});
    assert_eq!(
        refused(Dialect::Anthropic, system),
        format!("remote media URL in system[1] (url source); {URL_SOURCE}")
    );
}

#[test]
fn anthropic_openai_style_url_blocks_are_refused() {
    let block = json!({"type": "image_url", "image_url": {"url": "https://e.com/a.png"}});
    assert_eq!(
        refused(Dialect::Anthropic, with_block(block)),
        "remote media URL in messages[2].content[1] (image_url); only data: URLs are accepted"
    );
}

#[test]
fn anthropic_inline_sources_and_tool_arguments_pass() {
    let blocks = json!([
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "https://e.com is our site"}},
        {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": "x"}]}},
        {"type": "document", "source": {"type": "file", "file_id": "file_1"}, "citations": {"enabled": true}},
        {"type": "search_result", "source": "https://e.com/page", "title": "t", "content": [{"type": "text", "text": "x"}]},
        {"type": "text", "text": "see https://e.com", "cache_control": {"type": "ephemeral"}},
    ]);
    let tool_use = json!([
        {"type": "tool_use", "id": "t1", "name": "fetch", "input": {"url": "https://e.com"}},
    ]);
    let tool_result = json!([{"type": "tool_result", "tool_use_id": "t1", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
    ]}]);
    let request = json!({"messages": [
        {"role": "user", "content": blocks},
        {"role": "assistant", "content": tool_use},
        {"role": "user", "content": tool_result},
    ], "max_tokens": 9});
    assert_eq!(
        anthropic(request.clone()),
        with_forced(Dialect::Anthropic, request)
    );
}

#[test]
fn anthropic_tool_use_exemption_needs_every_type_to_agree() {
    for raw in [
        r#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":"https://e.com","type":"tool_use"}]}]}"#,
        r#"{"messages":[{"role":"user","content":[{"type":"tool_use","image_url":"https://e.com","type":"image_url"}]}]}"#,
    ] {
        assert_eq!(
            shape_with(Dialect::Anthropic, raw, &policy()).unwrap_err(),
            "remote media URL in messages[0].content[0] (image_url); only data: URLs are accepted",
            "{raw}"
        );
    }
}

#[test]
fn anthropic_remote_media_allowed_by_the_operator() {
    let mut p = policy();
    p.allow_remote_media = true;
    let block = json!({"type": "image", "source": {"type": "url", "url": "https://e.com/a.png"}});
    passes_with(Dialect::Anthropic, with_block(block.clone()), &p);
    passes_with(
        Dialect::Anthropic,
        json!({"system": [block], "messages": []}),
        &p,
    );
}

#[test]
fn anthropic_block_nesting_is_bounded() {
    let mut block = json!({"type": "text", "text": "x"});
    for _ in 0..5 {
        block = json!({"type": "tool_result", "content": [block]});
    }
    let reason = refused(
        Dialect::Anthropic,
        json!({"messages": [{"role": "user", "content": [block]}]}),
    );
    assert_eq!(
        reason,
        "messages[0].content[0].content[0].content[0].content[0].content[0] nests content blocks more than 4 levels deep"
    );
}

#[test]
fn url_classification() {
    assert!(is_data_url("data:image/png;base64,AA"));
    assert!(is_data_url("  DaTa:x"));
    assert!(!is_data_url("dat"));
    assert!(!is_data_url("https://e.com"));
    assert!(is_scheme_url("https://e.com"));
    assert!(is_scheme_url(" file:///etc"));
    assert!(is_scheme_url("s3+x.y-z://b"));
    assert!(!is_scheme_url("UklGRiQAAABXQVZF"));
    assert!(!is_scheme_url("://x"));
    assert!(!is_scheme_url("1a://x"));
    assert!(!is_scheme_url("data:audio/wav;base64,AA//"));
}
