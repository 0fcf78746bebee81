//! Tool definitions and response schemas: counts, types and schema bounds.

use super::*;

/// A schema of `depth` nested objects.
fn deep_schema(depth: usize) -> Value {
    let mut s = json!({"type": "string"});
    for _ in 1..depth {
        s = json!({"type": "object", "properties": {"a": s}});
    }
    s
}

#[test]
fn deep_schema_has_the_depth_it_says() {
    assert_eq!(nesting_depth(deep_schema(1).to_string().as_bytes()), 1);
    // Each level adds {"properties": {...}}: two brackets.
    assert_eq!(nesting_depth(deep_schema(3).to_string().as_bytes()), 5);
}

#[test]
fn openai_tool_count_and_type() {
    let mut p = policy();
    p.max_tools = 2;
    let tool = function_tool("f", json!({"type": "object"}));
    passes_with(
        Dialect::OpenAi,
        json!({"messages": [], "tools": [tool, tool]}),
        &p,
    );
    let reason = refused_with(
        Dialect::OpenAi,
        json!({"messages": [], "tools": [tool, tool, tool]}),
        &p,
    );
    assert_eq!(reason, "`tools` has more than 2 entries");

    let reason = refused(
        Dialect::OpenAi,
        json!({"messages": [], "tools": [tool, {"type": "web_search"}]}),
    );
    assert_eq!(
        reason,
        "tools[1].type must be \"function\" (got \"web_search\")"
    );
    let reason = refused(
        Dialect::OpenAi,
        json!({"messages": [], "tools": [{"function": {"name": "f"}}]}),
    );
    assert_eq!(reason, "tools[0] has no \"type\": \"function\"");
    let reason = refused(Dialect::OpenAi, json!({"messages": [], "tools": ["f"]}));
    assert_eq!(reason, "tools[0] must be an object");
    let reason = refused(Dialect::OpenAi, json!({"messages": [], "tools": {}}));
    assert_eq!(reason, "`tools` must be an array (got an object)");
    // A second `type` is checked as well as the first.
    let raw = r#"{"messages":[],"tools":[{"type":"function","type":"code_interpreter"}]}"#;
    assert_eq!(
        shape_with(Dialect::OpenAi, raw, &policy()).unwrap_err(),
        "tools[0].type must be \"function\" (got \"code_interpreter\")"
    );
    // null means no tools.
    passes_with(
        Dialect::OpenAi,
        json!({"messages": [], "tools": null}),
        &policy(),
    );
}

#[test]
fn openai_tool_schema_bounds() {
    let mut p = policy();
    let big = json!({"type": "object", "description": "x".repeat(70_000)});
    let size = big.to_string().len();
    let reason = refused_with(
        Dialect::OpenAi,
        json!({"messages": [], "tools": [function_tool("a", json!({})), function_tool("b", big.clone())]}),
        &p,
    );
    assert_eq!(
        reason,
        format!("tools[1].function.parameters is {size} bytes, over the 65536-byte limit")
    );
    p.max_schema_bytes = size;
    passes_with(
        Dialect::OpenAi,
        json!({"messages": [], "tools": [function_tool("b", big)]}),
        &p,
    );

    // deep_schema(17) nests 33 levels.
    let reason = refused(
        Dialect::OpenAi,
        json!({"messages": [], "tools": [function_tool("d", deep_schema(17))]}),
    );
    assert_eq!(
        reason,
        "tools[0].function.parameters nests 33 levels deep, over the limit of 32"
    );
    passes_with(
        Dialect::OpenAi,
        json!({"messages": [], "tools": [function_tool("d", deep_schema(16))]}),
        &policy(),
    );
}

#[test]
fn schema_depth_ignores_brackets_in_strings() {
    let tricky = json!({"description": "[[[[{{{{ \"quoted [ \\\" {", "enum": ["[", "{", "\\"]});
    assert_eq!(nesting_depth(tricky.to_string().as_bytes()), 2);
    let mut p = policy();
    p.max_schema_depth = 2;
    passes_with(
        Dialect::OpenAi,
        json!({"messages": [], "tools": [function_tool("t", tricky)]}),
        &p,
    );
}

#[test]
fn openai_deprecated_functions_are_bounded() {
    let mut p = policy();
    p.max_schema_depth = 3;
    passes_with(
        Dialect::OpenAi,
        json!({"messages": [], "functions": [{"name": "f", "parameters": deep_schema(2)}], "function_call": "auto"}),
        &p,
    );
    let reason = refused_with(
        Dialect::OpenAi,
        json!({"messages": [], "functions": [{"name": "f", "parameters": deep_schema(3)}]}),
        &p,
    );
    assert_eq!(
        reason,
        "functions[0].parameters nests 5 levels deep, over the limit of 3"
    );
    p.max_tools = 1;
    let f = json!({"name": "f"});
    let reason = refused_with(
        Dialect::OpenAi,
        json!({"messages": [], "functions": [f, f]}),
        &p,
    );
    assert_eq!(reason, "`functions` has more than 1 entries");
}

#[test]
fn response_format_schema_is_bounded() {
    let mut p = policy();
    p.max_schema_bytes = 100;
    let big = json!({"type": "object", "description": "x".repeat(200)});
    let size = big.to_string().len();
    let reason = refused_with(
        Dialect::OpenAi,
        json!({"messages": [], "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": big}}}),
        &p,
    );
    assert_eq!(
        reason,
        format!("response_format.json_schema.schema is {size} bytes, over the 100-byte limit")
    );
    // llama.cpp's json_object + schema form.
    let reason = refused_with(
        Dialect::OpenAi,
        json!({"messages": [], "response_format": {"type": "json_object", "schema": big}}),
        &p,
    );
    assert_eq!(
        reason,
        format!("response_format.schema is {size} bytes, over the 100-byte limit")
    );
    let reason = refused(
        Dialect::OpenAi,
        json!({"messages": [], "response_format": {"type": "json_schema", "json_schema": {"schema": deep_schema(20)}}}),
    );
    assert_eq!(
        reason,
        "response_format.json_schema.schema nests 39 levels deep, over the limit of 32"
    );
    let reason = refused(
        Dialect::OpenAi,
        json!({"messages": [], "response_format": {"type": "structural_tag", "structures": []}}),
    );
    assert_eq!(
        reason,
        "response_format.type must be \"text\", \"json_object\" or \"json_schema\" (got \"structural_tag\")"
    );
    let reason = refused(
        Dialect::OpenAi,
        json!({"messages": [], "response_format": "json"}),
    );
    assert_eq!(reason, "`response_format` must be an object (got a string)");
    for ty in ["text", "json_object"] {
        passes_with(
            Dialect::OpenAi,
            json!({"messages": [], "response_format": {"type": ty}}),
            &policy(),
        );
    }
}

#[test]
fn anthropic_client_tools_pass_and_server_tools_are_refused() {
    let client =
        json!({"name": "get_weather", "description": "d", "input_schema": {"type": "object"}});
    let custom = json!({"type": "custom", "name": "c", "input_schema": {"type": "object"}});
    passes_with(
        Dialect::Anthropic,
        json!({"messages": [], "tools": [client, custom]}),
        &policy(),
    );
    for ty in [
        "web_search_20250305",
        "web_fetch_20250910",
        "code_execution_20250825",
        "computer_20250124",
        "bash_20250124",
        "text_editor_20250728",
        "mcp_toolset",
    ] {
        let reason = refused(
            Dialect::Anthropic,
            json!({"messages": [], "tools": [client, {"type": ty, "name": "x"}]}),
        );
        assert_eq!(
            reason,
            format!("tools[1] is a server tool (type \"{ty}\"); only client tools are accepted")
        );
    }
    let reason = refused(
        Dialect::Anthropic,
        json!({"messages": [], "tools": [{"type": null, "name": "x"}]}),
    );
    assert_eq!(
        reason,
        "tools[0] is a server tool (type null); only client tools are accepted"
    );
}

#[test]
fn anthropic_tool_schema_and_count_bounds() {
    let mut p = policy();
    p.max_schema_bytes = 50;
    let big = json!({"type": "object", "description": "x".repeat(60)});
    let size = big.to_string().len();
    let reason = refused_with(
        Dialect::Anthropic,
        json!({"messages": [], "tools": [{"name": "t", "input_schema": big}]}),
        &p,
    );
    assert_eq!(
        reason,
        format!("tools[0].input_schema is {size} bytes, over the 50-byte limit")
    );
    let reason = refused(
        Dialect::Anthropic,
        json!({"messages": [], "tools": [{"name": "t", "input_schema": deep_schema(17)}]}),
    );
    assert_eq!(
        reason,
        "tools[0].input_schema nests 33 levels deep, over the limit of 32"
    );
    p.max_tools = 1;
    let t = json!({"name": "t"});
    let reason = refused_with(
        Dialect::Anthropic,
        json!({"messages": [], "tools": [t, t]}),
        &p,
    );
    assert_eq!(reason, "`tools` has more than 1 entries");
}
