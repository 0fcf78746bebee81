use super::*;
use crate::discovery::Target;
use crate::protocol::{ErrorCode, Outbound, Tokens};
use std::time::{Duration, UNIX_EPOCH};

fn backend() -> Backend {
    Backend {
        kind: "llamacpp".into(),
        url: "http://127.0.0.1:8080/".into(),
    }
}

fn finished<'a>(terminal: Option<&'a Outbound>, delivered: bool) -> Finished<'a> {
    Finished {
        job_id: "0b9e6f1c-6a43-4c8e-9d6e-3f2a1b0c9d8e",
        model: "m\n1",
        backend: backend(),
        terminal,
        delivered,
        elapsed_ms: 77,
        prices: (500_000, 1_000_000),
        at: UNIX_EPOCH + Duration::new(1_795_325_510, 5),
    }
}

#[test]
fn earnings_round_down_once_per_job() {
    assert_eq!(expected_micro_usdc(0, 0, 500_000, 1_000_000), 0);
    // 1 token at $0.50/1M is 0.5 micro: rounded down.
    assert_eq!(expected_micro_usdc(1, 0, 500_000, 1_000_000), 0);
    // 0.5 + 0.5 = 1: the sum is rounded, not each half.
    assert_eq!(expected_micro_usdc(1, 1, 500_000, 500_000), 1);
    assert_eq!(expected_micro_usdc(12, 5, 500_000, 1_000_000), 11);
    assert_eq!(expected_micro_usdc(1_000_000, 1_000_000, 3, 7), 10);
    assert_eq!(expected_micro_usdc(999_999, 0, 1, 0), 0);
    // No overflow on the way: each product fits in u128, their sum saturates.
    assert_eq!(
        expected_micro_usdc(u64::MAX, u64::MAX, u64::MAX, u64::MAX),
        u64::MAX
    );
    assert_eq!(
        expected_micro_usdc(u64::MAX, 0, 1_000_000, 0),
        u64::MAX,
        "exactly representable"
    );
}

#[test]
fn usdc_has_six_decimals() {
    assert_eq!(usdc(0), "0.000000");
    assert_eq!(usdc(11), "0.000011");
    assert_eq!(usdc(1_500_000), "1.500000");
    assert_eq!(usdc(123_456_789), "123.456789");
}

#[test]
fn a_line_round_trips_in_its_exact_shape() {
    let done = Outbound::JobDone {
        job_id: "x".into(),
        tokens: Tokens::new(12, 5),
        duration_ms: 1401,
    };
    let e = finished(Some(&done), true).entry();
    let text = serde_json::to_string(&e).unwrap();
    assert_eq!(
        text,
        r#"{"time":"2026-11-22T05:31:50.000000005+00:00","job_id":"0b9e6f1c-6a43-4c8e-9d6e-3f2a1b0c9d8e","model":"m\n1","backend":{"kind":"llamacpp","url":"http://127.0.0.1:8080/"},"input_tokens":12,"output_tokens":5,"duration_ms":1401,"input_per_1m":500000,"output_per_1m":1000000,"expected_micro_usdc":11,"outcome":"done"}"#
    );
    assert!(!text.contains('\n'), "one line whatever the model id holds");
    assert_eq!(serde_json::from_str::<Entry>(&text).unwrap(), e);
    // Fields a later version adds do not make old readers skip the line.
    let newer = text.replacen('{', r#"{"v":2,"#, 1);
    assert_eq!(serde_json::from_str::<Entry>(&newer).unwrap(), e);
    // A line missing a field is not a ledger entry.
    let partial = text.replace(r#","outcome":"done""#, "");
    assert!(serde_json::from_str::<Entry>(&partial).is_err());
}

#[test]
fn outcomes_and_who_earns() {
    let done = Outbound::JobDone {
        job_id: "x".into(),
        tokens: Tokens::new(12, 5),
        duration_ms: 9,
    };
    let e = finished(Some(&done), false).entry();
    assert_eq!(
        (e.outcome.as_str(), e.expected_micro_usdc, e.output_tokens),
        (CANCELLED, 0, 5),
        "a job_done that never went out is not paid"
    );
    let err = Outbound::job_error("x", ErrorCode::BackendTimeout, "slow", 4);
    let e = finished(Some(&err), true).entry();
    assert_eq!(
        (
            e.outcome.as_str(),
            e.input_tokens,
            e.output_tokens,
            e.duration_ms,
            e.expected_micro_usdc
        ),
        ("backend_timeout", 0, 4, 77, 0)
    );
    let e = finished(None, false).entry();
    assert_eq!(
        (e.outcome.as_str(), e.output_tokens, e.duration_ms),
        (CANCELLED, 0, 77)
    );
    assert_eq!((e.input_per_1m, e.output_per_1m), (500_000, 1_000_000));
}

#[test]
fn tally_sorts_outcomes() {
    let done = Outbound::JobDone {
        job_id: "x".into(),
        tokens: Tokens::new(12, 5),
        duration_ms: 9,
    };
    let err = Outbound::job_error("x", ErrorCode::Internal, "bug", 2);
    let mut t = Tally::default();
    t.add(&finished(Some(&done), true).entry());
    t.add(&finished(Some(&done), true).entry());
    t.add(&finished(Some(&err), true).entry());
    t.add(&finished(None, false).entry());
    assert_eq!(
        t,
        Tally {
            jobs: 4,
            done: 2,
            errors: 1,
            cancelled: 1,
            input_tokens: 24,
            output_tokens: 12,
            expected_micro_usdc: 22,
        }
    );
    assert_eq!(usdc(t.expected_micro_usdc), "0.000022");
}

#[test]
fn prometheus_counters() {
    let t = prometheus(&LedgerState {
        tally: Tally {
            jobs: 4,
            errors: 1,
            input_tokens: 24,
            output_tokens: 12,
            expected_micro_usdc: 22,
            ..Tally::default()
        },
        ..LedgerState::default()
    });
    for line in [
        "# TYPE usepod_edge_ledger_jobs_total counter",
        "usepod_edge_ledger_jobs_total 4",
        "usepod_edge_ledger_errors_total 1",
        "usepod_edge_ledger_cancelled_total 0",
        "usepod_edge_ledger_input_tokens_total 24",
        "usepod_edge_ledger_output_tokens_total 12",
        "usepod_edge_ledger_expected_micro_usdc_total 22",
        "usepod_edge_ledger_lines_lost_total 0",
    ] {
        assert!(t.lines().any(|l| l == line), "missing {line:?} in\n{t}");
    }
}

#[test]
fn backend_url_loses_its_query() {
    let target = Target {
        kind: crate::backend::BackendKind::Vllm,
        url: crate::endpoint::Endpoint::parse("http://127.0.0.1:8000/base?key=secret").unwrap(),
        allow: None,
        api_key: Some("sk".into()),
        serves_messages: Default::default(),
    };
    assert_eq!(
        Backend::of(&target),
        Backend {
            kind: "vllm".into(),
            url: "http://127.0.0.1:8000/base".into()
        }
    );
}
