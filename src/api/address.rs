//! Chat address and email rules, shared so the CLI can refuse a bad address before a round trip.

/// Shortest and longest chat address.
pub const ADDRESS_MIN: usize = 3;
pub const ADDRESS_MAX: usize = 40;

/// Prefix of a group target in `to`.
pub const GROUP_PREFIX: &str = "group:";

/// Normalises (trim, lowercase) and checks a chat address: 3–40 chars of a-z 0-9 - _ .
pub fn normalize_address(raw: &str) -> Result<String, String> {
    let a = raw.trim().to_ascii_lowercase();
    if a.len() < ADDRESS_MIN || a.len() > ADDRESS_MAX {
        return Err(format!(
            "chat address must be {ADDRESS_MIN}-{ADDRESS_MAX} characters long (got {})",
            a.chars().count()
        ));
    }
    if let Some(bad) = a
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "chat address may only hold a-z, 0-9, '-', '_' and '.' (found {bad:?})"
        ));
    }
    Ok(a)
}

/// Normalises (trim, lowercase) and checks an email address. Deliberately loose: one `@`,
/// something on each side, a dot in the domain, no spaces.
pub fn normalize_email(raw: &str) -> Result<String, String> {
    let e = raw.trim().to_ascii_lowercase();
    let valid = e.len() <= 254
        && !e.chars().any(|c| c.is_whitespace() || c.is_control())
        && match e.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            }
            None => false,
        };
    if valid {
        Ok(e)
    } else {
        Err(format!("{raw:?} is not a valid email address"))
    }
}

/// Whether a `to` names a group (`group:grp_…`).
pub fn group_target(to: &str) -> Option<&str> {
    to.strip_prefix(GROUP_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(normalize_address(" Codex-Test ").unwrap(), "codex-test");
        assert_eq!(normalize_address("a.b_c-1").unwrap(), "a.b_c-1");
        assert!(normalize_address("ab").is_err());
        assert!(normalize_address(&"a".repeat(41)).is_err());
        assert!(normalize_address("has space").is_err());
        assert!(normalize_address("slash/no").is_err());
        assert!(normalize_address("ünï").is_err());
    }

    #[test]
    fn emails() {
        assert_eq!(
            normalize_email("AI-Codex@Example.com").unwrap(),
            "ai-codex@example.com"
        );
        assert!(normalize_email("nope").is_err());
        assert!(normalize_email("a@b").is_err());
        assert!(normalize_email("a b@c.d").is_err());
        assert!(normalize_email("@c.d").is_err());
    }

    #[test]
    fn groups() {
        assert_eq!(group_target("group:grp_1"), Some("grp_1"));
        assert_eq!(group_target("bob"), None);
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn addresses_are_clean_when_accepted(raw in any::<String>()) {
            if let Ok(a) = normalize_address(&raw) {
                prop_assert!((ADDRESS_MIN..=ADDRESS_MAX).contains(&a.len()));
                prop_assert!(a.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c)));
            }
        }

        #[test]
        fn emails_never_panic(raw in any::<String>()) {
            if let Ok(e) = normalize_email(&raw) {
                prop_assert!(e.contains('@') && !e.contains(char::is_whitespace));
            }
        }

        #[test]
        fn file_names_have_no_path(raw in any::<String>()) {
            let n = crate::api::files::sanitize_file_name(&raw);
            prop_assert!(!n.is_empty() && n.len() <= 200);
            prop_assert!(!n.contains('/') && !n.contains('\\') && !n.starts_with('.'));
            prop_assert!(!n.chars().any(char::is_control));
        }
    }
}
