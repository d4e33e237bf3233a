//! How login codes resist guessing and lock-outs (docs: README, "Login codes").
//!
//! - Every request-code makes its own challenge, bound to the client address that asked and to
//!   a random login id only that client receives. Wrong guesses count against the challenge
//!   they were made against (5 tries), so nobody can void the owner's code by guessing.
//! - Request limits are per client address (per email from that address, and overall), so a
//!   stranger cannot use up the owner's requests.
//! - Wrong guesses are also counted per email across all challenges and addresses: after
//!   `FAILS_BEFORE_LONG_CODES` in a week, new codes for that email are 12 characters of base32
//!   (60 bits) instead of 6 digits. An attacker gets at most that many guesses at a 6-digit code
//!   per week; the owner, who reads the code from the email, still gets in.
//! - Per client address, wrong guesses over all emails are capped per 10 minutes.
//! - All counts live in the database, so a restart forgets nothing.

use std::net::IpAddr;

use super::extract::token_hash;

/// Wrong tries before a challenge is void.
pub const CODE_MAX_ATTEMPTS: u32 = 5;
/// The window of the request limits and the per-address failure cap.
pub const SHORT_WINDOW_MS: i64 = 10 * 60 * 1000;
/// The window of the per-email failure tally.
pub const LONG_WINDOW_MS: i64 = 7 * 24 * 60 * 60 * 1000;
/// Wrong guesses for one email (per week) after which its codes are long.
pub const FAILS_BEFORE_LONG_CODES: u32 = 10;
/// Wrong guesses from one client address (any email) per 10 minutes.
pub const FAILS_PER_CLIENT: u32 = 30;
/// Length of a long code, without its dashes.
pub const LONG_CODE_CHARS: usize = 12;

/// Crockford's base32: no I, L, O or U, so a code read off a screen is typed back right.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// The key a client address is counted under: an IPv4 address, or an IPv6 /64 (one
/// subscriber's usual allocation, so rotating within it gains nothing).
pub fn client_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// A new code: 6 digits, or `XXXX-XXXX-XXXX` when the email is under attack.
pub fn new_code(long: bool) -> String {
    if !long {
        let n: u32 = rand::random_range(0..1_000_000);
        return format!("{n:06}");
    }
    let chars: Vec<char> = (0..LONG_CODE_CHARS)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect();
    chars
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

/// A code as typed, in the form it was hashed: no spaces or dashes, upper case, and the
/// letters base32 readers confuse mapped to their digits.
pub fn normalize_code(code: &str) -> String {
    code.chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            other => other,
        })
        .collect()
}

pub fn code_hash(email: &str, code: &str) -> String {
    token_hash(&format!("{email}:{}", normalize_code(code)))
}

/// A login id (`lgn_` + 32 hex digits) and its hash.
pub fn new_login_id() -> (String, String) {
    let mut raw = [0u8; 16];
    rand::fill(&mut raw);
    let id = format!("lgn_{}", hex::encode(raw));
    let hash = token_hash(&id);
    (id, hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn client_keys() {
        assert_eq!(client_key("203.0.113.9".parse().unwrap()), "203.0.113.9");
        assert_eq!(client_key("::ffff:10.0.0.1".parse().unwrap()), "10.0.0.1");
        assert_eq!(
            client_key("2001:db8:1:2:aaaa::1".parse().unwrap()),
            client_key("2001:db8:1:2:bbbb::9".parse().unwrap())
        );
    }

    #[test]
    fn codes() {
        assert_eq!(new_code(false).len(), 6);
        let long = new_code(true);
        assert_eq!(long.len(), LONG_CODE_CHARS + 2);
        assert_eq!(normalize_code(&long).len(), LONG_CODE_CHARS);
        assert_eq!(normalize_code(" abcd-efgh-ijkl "), "ABCDEFGH1JK1");
        assert_eq!(code_hash("a@x", "0123 45"), code_hash("a@x", "012345"));
    }

    proptest! {
        /// Whatever is typed, normalizing never panics and is idempotent.
        #[test]
        fn normalize_is_idempotent(s in any::<String>()) {
            let once = normalize_code(&s);
            prop_assert_eq!(normalize_code(&once), once);
        }
    }
}
