//! Plain decimals (`12`, `-3.25`) read by hand: core's float parser costs the
//! static binary 15 KB, and every number we read from a tool or a backend
//! (nvidia-smi, Prometheus gauges, a test clock) is written this way.

/// `s` as a number when it is an integer or `int.frac` of at most 12 digits
/// each, with an optional leading `-`; anything else (`[N/A]`, `1e3`, `NaN`) is None.
pub fn plain_decimal(s: &str) -> Option<f64> {
    let (negative, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let digits = |s: &str| s.len() <= 12 && s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits(int) || !digits(frac) || (body.contains('.') && frac.is_empty()) {
        return None;
    }
    let whole: u64 = int.parse().ok()?;
    let part: u64 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    let magnitude = whole as f64 + part as f64 / 10f64.powi(frac.len() as i32);
    Some(if negative { -magnitude } else { magnitude })
}

#[cfg(test)]
mod tests {
    use super::plain_decimal;

    #[test]
    fn integers_and_plain_decimals_only() {
        assert_eq!(plain_decimal("12"), Some(12.0));
        assert_eq!(plain_decimal("12.5"), Some(12.5));
        assert_eq!(plain_decimal("-3.25"), Some(-3.25));
        assert_eq!(plain_decimal("0.000001"), Some(0.000001));
        assert_eq!(plain_decimal("1700000000.25"), Some(1_700_000_000.25));
        for bad in [
            "", "-", ".5", "5.", "1e3", "NaN", "+Inf", "[N/A]", " 1", "1.2.3", "--1",
        ] {
            assert_eq!(plain_decimal(bad), None, "{bad:?}");
        }
        assert_eq!(plain_decimal("1234567890123"), None, "over 12 digits");
    }
}
