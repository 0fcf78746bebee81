//! Naming what went wrong in a backend call: the job_error code and message.

use crate::client::{HttpError, Phase};
use crate::protocol::ErrorCode;

/// Error code and message for a failed backend call.
pub fn classify_http(e: &HttpError) -> (ErrorCode, String) {
    let code = match e {
        HttpError::Unreachable(_) => ErrorCode::BackendUnreachable,
        HttpError::Timeout(_) => ErrorCode::BackendTimeout,
        _ => ErrorCode::Internal,
    };
    let message = match e {
        HttpError::Timeout(Phase::Deadline) => "job deadline exceeded".to_owned(),
        other => format!("backend: {other}"),
    };
    (code, message)
}

/// Error code and message for a non-2xx backend answer.
pub fn classify_status(status: u16, body: &[u8]) -> (ErrorCode, String) {
    let excerpt: String = String::from_utf8_lossy(body).chars().take(300).collect();
    let code = match status {
        401 | 403 => ErrorCode::AuthRejectedByBackend,
        _ => ErrorCode::Internal,
    };
    (
        code,
        format!("backend answered HTTP {status}: {}", excerpt.trim()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn error_codes() {
        assert_eq!(
            classify_status(401, b"").0,
            ErrorCode::AuthRejectedByBackend
        );
        assert_eq!(
            classify_status(403, b"").0,
            ErrorCode::AuthRejectedByBackend
        );
        let (c, m) = classify_status(500, b"boom happened");
        assert_eq!(c, ErrorCode::Internal);
        assert!(m.contains("500") && m.contains("boom happened"));
        assert_eq!(
            classify_http(&HttpError::Unreachable(ureq::Error::HostNotFound)).0,
            ErrorCode::BackendUnreachable
        );
        for phase in [Phase::Connect, Phase::FirstByte, Phase::Idle] {
            let (c, m) = classify_http(&HttpError::Timeout(phase));
            assert_eq!(c, ErrorCode::BackendTimeout);
            assert!(m.contains(phase.as_str()), "{m}");
        }
        assert_eq!(
            classify_http(&HttpError::Timeout(Phase::Deadline)),
            (
                ErrorCode::BackendTimeout,
                "job deadline exceeded".to_owned()
            )
        );
        let eof = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "Peer disconnected");
        let (c, m) = classify_http(&HttpError::Failed(ureq::Error::Io(eof)));
        assert_eq!(c, ErrorCode::Internal);
        assert!(m.contains("Peer disconnected"), "{m}");
    }
}
