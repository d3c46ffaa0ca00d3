//! Masking of personal data in text the brain stores or sends: payment
//! card numbers (13–19 digits passing the Luhn check, with or without
//! spaces or dashes), mobile phone numbers (11-digit Chinese mobiles and
//! international `+` numbers) and 18-character resident ID numbers (with
//! their ISO 7064 check character). Only the last four characters are
//! kept, enough for a person to tell two apart.
//!
//! It runs on every free-text field at the store's boundary (incident
//! summaries, timeline details, hypothesis evidence, action reasons,
//! approval reasons and comments, the audit log), on incident events on the
//! bus and on notifications. Action targets are not free text: they are
//! the keys the actuators act on and are kept as given (agents should send
//! pseudonymous keys, not card numbers).

use std::{borrow::Cow, sync::LazyLock};

use regex::Regex;

/// Digit runs that may be personal data: an optional `+`, then 11 to 22
/// digits possibly grouped by single spaces or dashes, or 17 digits and a
/// check character.
static CANDIDATE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:\+\d[\d -]{6,20}\d|\b\d{17}[\dXx]\b|\b\d(?:[ -]?\d){10,18}\b)")
        .expect("the masking pattern compiles")
});

/// `text` with every card number, phone number and ID number masked.
///
/// # Examples
/// ```
/// use selfheal_brain::mask::mask;
/// assert_eq!(mask("card 4111 1111 1111 1111 declined"), "card ************1111 declined");
/// assert_eq!(mask("call 13800138000"), "call *******8000");
/// assert_eq!(mask("order 12345 at 1700000000000"), "order 12345 at 1700000000000");
/// ```
pub fn mask(text: &str) -> Cow<'_, str> {
    if !text.bytes().any(|b| b.is_ascii_digit()) {
        return Cow::Borrowed(text);
    }
    CANDIDATE.replace_all(text, |c: &regex::Captures<'_>| {
        let m = &c[0];
        if personal(m) { hide(m) } else { m.to_string() }
    })
}

/// Masks a string in place (for owned fields).
pub fn mask_owned(text: String) -> String {
    match mask(&text) {
        Cow::Borrowed(_) => text,
        Cow::Owned(m) => m,
    }
}

fn hide(m: &str) -> String {
    let chars: Vec<char> = m.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    let keep = 4.min(chars.len());
    let mut out: String = chars[..chars.len() - keep]
        .iter()
        .map(|c| if *c == '+' { '+' } else { '*' })
        .collect();
    out.extend(&chars[chars.len() - keep..]);
    out
}

/// Whether a candidate run is a card, phone or ID number.
fn personal(m: &str) -> bool {
    let digits: Vec<u8> = m
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect();
    if m.starts_with('+') {
        return (8..=15).contains(&digits.len());
    }
    let last = m.as_bytes()[m.len() - 1];
    if m.len() == 18 && m.bytes().take(17).all(|b| b.is_ascii_digit()) && resident_id(m) {
        return true;
    }
    if !last.is_ascii_digit() {
        return false;
    }
    let grouped = m.contains([' ', '-']);
    // Cards and phones are written in groups of 3 to 6 digits (4-4-4-4,
    // 4-6-5, 3-4-4); an epoch and a counter joined by a dash, as in an
    // incident id `inc-1796117372800-1`, is not one.
    if grouped && m.split([' ', '-']).any(|g| !(3..=6).contains(&g.len())) {
        return false;
    }
    if digits.len() == 11 && digits[0] == 1 && (3..=9).contains(&digits[1]) {
        return true;
    }
    // Epoch timestamps in ms (13 digits starting 1) pass Luhn one time in
    // ten; a card number of 13 digits starts with 4 (Visa) only.
    if digits.len() == 13 && digits[0] != 4 {
        return false;
    }
    (13..=19).contains(&digits.len()) && luhn(&digits)
}

fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = d as u32;
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The 18-character resident ID check (ISO 7064 MOD 11-2).
fn resident_id(s: &str) -> bool {
    const W: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const CHECK: &[u8; 11] = b"10X98765432";
    let b = s.as_bytes();
    let sum: u32 = b[..17]
        .iter()
        .zip(W)
        .map(|(c, w)| (c - b'0') as u32 * w)
        .sum();
    CHECK[(sum % 11) as usize] == b[17].to_ascii_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_made_of_a_timestamp_and_a_counter_are_kept() {
        // 1796117372800-1 passes the Luhn check.
        assert!(luhn(&[1, 7, 9, 6, 1, 1, 7, 3, 7, 2, 8, 0, 0, 1]));
        let text = "like inc-1796117372800-1 (100% alike)";
        assert_eq!(mask(text), text);
        assert_eq!(mask("card 4111-1111-1111-1111"), "card ************1111");
        assert_eq!(mask("call 138-0013-8000"), "call *******8000");
    }

    #[test]
    fn personal_numbers_are_masked_and_ordinary_numbers_are_not() {
        for (given, want) in [
            ("4111111111111111", "************1111"),
            ("pan 5500-0000-0000-0004 ok", "pan ************0004 ok"),
            (
                "mobile 13800138000, call back",
                "mobile *******8000, call back",
            ),
            ("+44 20 7946 0958", "+********0958"),
            ("id 11010519491231002X", "id **************002X"),
            ("id 110105194912310021 x", "id 110105194912310021 x"),
            ("ts 1700000000000 p99 830 ms", "ts 1700000000000 p99 830 ms"),
            ("acct-7 share 0.42 at 12:00", "acct-7 share 0.42 at 12:00"),
            ("4111111111111112", "4111111111111112"),
            ("order 20261122000123", "order 20261122000123"),
            ("no digits here", "no digits here"),
        ] {
            assert_eq!(mask(given), want, "{given}");
        }
    }

    #[test]
    fn masking_is_idempotent_and_never_grows_digits() {
        let s = "card 4111 1111 1111 1111 and 13800138000";
        let once = mask(s).into_owned();
        assert_eq!(mask(&once), once);
        assert!(!once.contains("4111 1111"));
    }
}
