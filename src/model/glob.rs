//! Name patterns where `*` matches any run of characters: segment filters
//! of alert sinks, escalation tool names.

/// Whether `name` matches `pattern` (`*` any run of characters, the rest itself).
pub fn matches(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if name.len() < first.len() + last.len() || !name.starts_with(first) || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for p in &parts[1..parts.len() - 1] {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    true
}

/// The same, ASCII case-insensitive.
pub fn matches_ignore_case(pattern: &str, name: &str) -> bool {
    matches(&pattern.to_ascii_lowercase(), &name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_match_any_run_and_the_rest_matches_itself() {
        assert!(matches("shop/*", "shop/refund"));
        assert!(matches("shop/*", "shop/*"), "the pooled segment too");
        assert!(!matches("shop/*", "shoe/refund"));
        assert!(matches("*/refund", "a/b/refund"));
        assert!(matches("a*c*e", "abcde"));
        assert!(!matches("a*c*e", "abde"));
        assert!(matches("exact", "exact") && !matches("exact", "exactly"));
        assert!(!matches("ab*ba", "aba"), "prefix and suffix may not overlap");
        assert!(matches_ignore_case("escalate*", "Escalate_Ticket"));
    }
}
