//! The operator's limits on job requests.

/// Operator limits for job requests.
#[derive(Debug, Clone)]
pub struct RequestPolicy {
    /// Upper bound for max_tokens / max_completion_tokens; the caller already resolved it
    /// as min(limits.max_output_tokens, the model's context window). Always >= 1 (0 is
    /// treated as 1).
    pub max_output_tokens: u32,
    /// Entries in `messages`.
    pub max_messages: usize,
    /// Raw JSON bytes of `messages` plus Anthropic `system`.
    pub max_prompt_bytes: usize,
    /// Raw JSON bytes of one tool schema or response_format schema.
    pub max_schema_bytes: usize,
    /// `{`/`[` nesting of one such schema.
    pub max_schema_depth: usize,
    /// Entries in `tools` (and, separately, in the deprecated `functions`).
    pub max_tools: usize,
    /// Cap for `top_logprobs`.
    pub max_top_logprobs: u32,
    /// `{`/`[` nesting of the whole request, so that no backend's parser meets a body
    /// deeper than this. Never below `max_schema_depth + 8`, so a schema at its own limit
    /// still fits inside `tools[i].function.parameters`.
    pub max_request_depth: usize,
    /// Lets content carry http(s) and other non-`data:` URLs, which the backend would
    /// fetch from the operator's network.
    pub allow_remote_media: bool,
    /// Top-level field names the operator allows through although the policy would drop
    /// them (server extensions such as "grammar", "cache_prompt", ...). Never overrides
    /// the forced fields (model, stream, stream_options.include_usage, max_tokens clamp,
    /// n/best_of): those are checked the same whichever list admitted them.
    pub allow_fields: Vec<String>,
}

impl RequestPolicy {
    /// The defaults: 1024 messages, 4 MiB of prompt, 64 KiB and 32 levels per schema,
    /// 128 tools, top_logprobs 20, request nesting 64, no remote media, no extra fields.
    pub fn new(max_output_tokens: u32) -> Self {
        RequestPolicy {
            max_output_tokens: max_output_tokens.max(1),
            max_messages: 1024,
            max_prompt_bytes: 4 << 20,
            max_schema_bytes: 64 << 10,
            max_schema_depth: 32,
            max_tools: 128,
            max_top_logprobs: 20,
            max_request_depth: 64,
            allow_remote_media: false,
            allow_fields: Vec::new(),
        }
    }
}
