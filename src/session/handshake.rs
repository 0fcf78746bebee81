//! The server-speaks-first authentication: challenge → signed response → verdict.

use super::duplex::Duplex;
use super::SessionError;
use crate::identity::Identity;
use crate::protocol::{parse_inbound, Inbound, Outbound};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use tungstenite::{Message, WebSocket};

/// Next text message before auth; control frames are handled by tungstenite.
fn next_text(
    ws: &mut WebSocket<Duplex>,
    waiting_for: &'static str,
) -> Result<String, SessionError> {
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => return Ok(t.as_str().to_owned()),
            Ok(Message::Binary(_)) => {
                return Err(SessionError::Handshake(format!(
                    "binary frame while waiting for {waiting_for}"
                )))
            }
            Ok(Message::Close(frame)) => {
                let _ = ws.flush();
                let what = frame
                    .map(|f| format!("code {} {:?}", u16::from(f.code), f.reason.as_str()))
                    .unwrap_or_else(|| "no code".into());
                return Err(SessionError::Handshake(format!(
                    "coordinator closed the connection ({what}) while we waited for {waiting_for}"
                )));
            }
            Ok(_) => {}
            Err(e) => return Err(SessionError::from_ws(waiting_for, e)),
        }
    }
}

/// The signed answer to a challenge; enrollment_code only while unenrolled.
pub fn auth_response(identity: &Identity, nonce: &[u8], enrollment_code: Option<&str>) -> Outbound {
    Outbound::AuthResponse {
        pubkey: identity.public_b64(),
        signature: identity.sign_b64(nonce),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        enrollment_code: match identity.provider_id() {
            None => enrollment_code.map(str::to_owned),
            Some(_) => None,
        },
    }
}

/// Runs the handshake; returns the provider_id from auth_ok, if any.
pub fn authenticate(
    ws: &mut WebSocket<Duplex>,
    identity: &Identity,
    enrollment_code: Option<&str>,
) -> Result<Option<String>, SessionError> {
    let text = next_text(ws, "auth_challenge")?;
    let nonce = match parse_inbound(&text) {
        Ok(Inbound::AuthChallenge { nonce }) => B64
            .decode(nonce.as_bytes())
            .ok()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                SessionError::Handshake(
                    "auth_challenge nonce missing or not standard base64".into(),
                )
            })?,
        Ok(other) => {
            return Err(SessionError::Handshake(format!(
                "expected auth_challenge, got {other:?}"
            )))
        }
        Err(e) => {
            return Err(SessionError::Handshake(format!(
                "expected auth_challenge: {e}"
            )))
        }
    };
    let reply = auth_response(identity, &nonce, enrollment_code);
    ws.send(Message::text(reply.to_text()))
        .map_err(|e| SessionError::from_ws("sending auth_response", e))?;
    let text = next_text(ws, "auth_ok")?;
    match parse_inbound(&text) {
        Ok(Inbound::AuthOk { provider_id }) => Ok(provider_id),
        Ok(Inbound::AuthFailed { reason }) => Err(SessionError::AuthFailed(reason)),
        Ok(other) => Err(SessionError::Handshake(format!(
            "expected auth_ok, got {other:?}"
        ))),
        Err(e) => Err(SessionError::Handshake(format!("expected auth_ok: {e}"))),
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
        let r = auth_response(&id, b"n", Some("CODE")).to_text();
        assert!(r.contains("\"enrollment_code\":\"CODE\""), "{r}");
        id.set_provider_id("prov-1").unwrap();
        let r = auth_response(&id, b"n", Some("CODE")).to_text();
        assert!(!r.contains("enrollment_code"), "{r}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
