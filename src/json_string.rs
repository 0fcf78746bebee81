//! Strings written as JSON straight into a byte buffer, escaped exactly as
//! serde_json escapes them: request bodies are built by appending pieces, not
//! by serialising a tree.

/// Appends `text` as the inside of a JSON string (no quotes), so pieces can be joined into
/// one string without building it first.
pub fn push_json_escaped(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = text.as_bytes();
    let mut start = 0;
    // Bytes of multi-byte UTF-8 are all >= 0x80, so they never need escaping.
    for (i, &byte) in bytes.iter().enumerate() {
        let short: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => &[],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if short.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0xf)]);
        } else {
            out.extend_from_slice(short);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Appends `text` as a JSON string, quotes included.
pub fn push_json_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    push_json_escaped(out, text);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_as_serde_json_does() {
        let all: String = (0u8..0x80)
            .map(char::from)
            .chain("é😀\u{2028}".chars())
            .collect();
        for text in ["", "plain", "a\"b\\c", "\u{7f}", all.as_str()] {
            let mut out = Vec::new();
            push_json_string(&mut out, text);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(text).unwrap()
            );
        }
    }
}
