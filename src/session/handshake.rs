//! The server-speaks-first authentication: challenge → signed response → verdict.

use super::error::{HandshakeError, SessionError};
use super::nonce::challenge_nonce;
use crate::identity::Identity;
use crate::protocol::{parse_inbound, Inbound, Outbound};
use crate::untrusted::shown;
use std::io::{Read, Write};
use tungstenite::{Message, WebSocket};

/// Next text message before auth; control frames are handled by tungstenite.
fn next_text<S: Read + Write>(
    ws: &mut WebSocket<S>,
    waiting_for: &'static str,
) -> Result<String, SessionError> {
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => return Ok(t.as_str().to_owned()),
            Ok(Message::Binary(_)) => return Err(HandshakeError::Binary { waiting_for }.into()),
            Ok(Message::Close(frame)) => {
                let _ = ws.flush();
                let frame = frame
                    .map(|f| format!("code {} \"{}\"", u16::from(f.code), shown(&f.reason, 123)))
                    .unwrap_or_else(|| "no code".into());
                return Err(HandshakeError::Closed { waiting_for, frame }.into());
            }
            Ok(_) => {}
            Err(e) => return Err(SessionError::from_ws(waiting_for, e)),
        }
    }
}

/// A message named for an error line, without its (untrusted, maybe huge) fields.
pub fn describe(m: &Inbound) -> String {
    match m {
        Inbound::AuthChallenge { .. } => "auth_challenge".into(),
        Inbound::AuthOk { .. } => "auth_ok".into(),
        Inbound::AuthFailed { .. } => "auth_failed".into(),
        Inbound::Job(_) | Inbound::MalformedJob { .. } => "job".into(),
        Inbound::JobCancel { .. } => "job_cancel".into(),
        Inbound::ConfigUpdate => "config_update".into(),
        Inbound::Unknown { kind } => format!("a message of type \"{}\"", shown(kind, 64)),
    }
}

/// The signed answer to a challenge; enrollment_code only while unenrolled.
/// `version`: the agent's, as the Host reports it.
pub fn auth_response(
    identity: &Identity,
    nonce: &[u8],
    enrollment_code: Option<&str>,
    version: &str,
) -> Outbound {
    Outbound::AuthResponse {
        pubkey: identity.public_b64(),
        signature: identity.sign_b64(nonce),
        agent_version: version.into(),
        enrollment_code: match identity.provider_id() {
            None => enrollment_code.map(str::to_owned),
            Some(_) => None,
        },
    }
}

/// Runs the handshake; returns the provider_id from auth_ok, if any.
pub fn authenticate<S: Read + Write>(
    ws: &mut WebSocket<S>,
    identity: &Identity,
    enrollment_code: Option<&str>,
    version: &str,
) -> Result<Option<String>, SessionError> {
    let text = next_text(ws, "auth_challenge")?;
    let nonce = match parse_inbound(&text) {
        Ok(Inbound::AuthChallenge { nonce }) => {
            challenge_nonce(&nonce).map_err(HandshakeError::Nonce)?
        }
        Ok(other) => {
            return Err(HandshakeError::Unexpected {
                expected: "auth_challenge",
                got: describe(&other),
            }
            .into())
        }
        Err(source) => {
            return Err(HandshakeError::Unreadable {
                expected: "auth_challenge",
                source,
            }
            .into())
        }
    };
    let reply = auth_response(identity, &nonce, enrollment_code, version);
    ws.send(Message::text(reply.to_text()))
        .map_err(|e| SessionError::from_ws("sending auth_response", e))?;
    let text = next_text(ws, "auth_ok")?;
    match parse_inbound(&text) {
        Ok(Inbound::AuthOk { provider_id }) => Ok(provider_id),
        Ok(Inbound::AuthFailed { reason }) => Err(SessionError::AuthFailed(reason)),
        Ok(other) => Err(HandshakeError::Unexpected {
            expected: "auth_ok",
            got: describe(&other),
        }
        .into()),
        Err(source) => Err(HandshakeError::Unreadable {
            expected: "auth_ok",
            source,
        }
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enrollment_code_only_while_unenrolled() {
        let dir = std::env::temp_dir().join(format!("usepod-edge-hs-{}", std::process::id()));
        let path = dir.join("k");
        let (mut id, _) = Identity::load_or_create(&path).unwrap();
        let r = auth_response(&id, b"n", Some("CODE"), "0.1.0").to_text();
        assert!(r.contains("\"enrollment_code\":\"CODE\""), "{r}");
        id.set_provider_id("prov-1").unwrap();
        let r = auth_response(&id, b"n", Some("CODE"), "0.1.0").to_text();
        assert!(!r.contains("enrollment_code"), "{r}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn unexpected_messages_are_named_without_their_content() {
        let m = parse_inbound(r#"{"type":"auth_ok","provider_id":"p\nINJECTED"}"#).unwrap();
        assert_eq!(describe(&m), "auth_ok");
        let m = parse_inbound(r#"{"type":"x\n\u001b[31m"}"#).unwrap();
        assert_eq!(describe(&m), "a message of type \"x\\n\\x1b[31m\"");
    }
}
