//! The server-speaks-first authentication: challenge → signed response → verdict.

use super::error::{HandshakeError, NonceError, SessionError};
use crate::identity::Identity;
use crate::protocol::{parse_inbound, Inbound, Outbound};
use crate::untrusted::shown;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
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

/// Nonce lengths that are signed, in decoded bytes: the signature covers the raw
/// decoded nonce (docs/protocol.md, "Handshake"), so that is what is measured, not
/// the base64 text. The coordinator sends 32; anything far from that is a peer
/// trying to have our key sign a message of its choosing.
pub const NONCE_BYTES: std::ops::RangeInclusive<usize> = 16..=64;

/// The nonce to sign, or why this challenge is not answered.
pub fn challenge_nonce(nonce_b64: &str) -> Result<Vec<u8>, NonceError> {
    // Base64 of 64 bytes is 88 characters; longer text is refused undecoded.
    if nonce_b64.len() > 4 * NONCE_BYTES.end().div_ceil(3) {
        return Err(NonceError::TooLong {
            chars: nonce_b64.len(),
        });
    }
    let nonce = B64
        .decode(nonce_b64.as_bytes())
        .map_err(|e| NonceError::Undecodable(Some(e)))?;
    if nonce.is_empty() {
        return Err(NonceError::Undecodable(None));
    }
    if !NONCE_BYTES.contains(&nonce.len()) {
        return Err(NonceError::Length { bytes: nonce.len() });
    }
    Ok(nonce)
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
    fn only_nonces_of_16_to_64_decoded_bytes_are_signed() {
        for n in [16, 32, 64] {
            assert_eq!(challenge_nonce(&B64.encode(vec![7u8; n])).unwrap().len(), n);
        }
        for n in [1, 8, 15, 65, 100, 4096] {
            let e = challenge_nonce(&B64.encode(vec![7u8; n])).unwrap_err();
            assert!(e.to_string().contains("not signed"), "{n}: {e}");
        }
        // Bytes, not characters: 16 bytes are 24 base64 characters, 64 are 88.
        assert_eq!(B64.encode([0u8; 64]).len(), 88);
        assert!(challenge_nonce(&B64.encode([0u8; 12])).is_err()); // 16 characters
        assert!(challenge_nonce("")
            .unwrap_err()
            .to_string()
            .contains("missing"));
        assert!(challenge_nonce("%%%%")
            .unwrap_err()
            .to_string()
            .contains("base64"));
        // A megabyte of text is refused by its length, before any decoding.
        let huge = "A".repeat(1 << 20);
        assert!(challenge_nonce(&huge)
            .unwrap_err()
            .to_string()
            .contains("longer than 64"));
    }

    #[test]
    fn unexpected_messages_are_named_without_their_content() {
        let m = parse_inbound(r#"{"type":"auth_ok","provider_id":"p\nINJECTED"}"#).unwrap();
        assert_eq!(describe(&m), "auth_ok");
        let m = parse_inbound(r#"{"type":"x\n\u001b[31m"}"#).unwrap();
        assert_eq!(describe(&m), "a message of type \"x\\n\\x1b[31m\"");
    }
}
