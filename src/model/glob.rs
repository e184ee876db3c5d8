//! Name patterns where `*` matches any run of characters: segment filters
//! of alert sinks, escalation tool names.

/// Whether `name` matches `pattern` (`*` any run of characters, the rest itself).
pub fn matches(pattern: &str, name: &str) -> bool {
    matches_by(pattern.as_bytes(), name.as_bytes(), |a, b| a == b)
}

/// The same, ASCII case-insensitive (no allocation: it runs on every tool step).
pub fn matches_ignore_case(pattern: &str, name: &str) -> bool {
    matches_by(pattern.as_bytes(), name.as_bytes(), |a, b| a.eq_ignore_ascii_case(&b))
}

fn matches_by(pattern: &[u8], name: &[u8], eq: impl Fn(u8, u8) -> bool + Copy) -> bool {
    let same = |a: &[u8], b: &[u8]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| eq(*x, *y));
    let (Some(lo), Some(hi)) = (
        pattern.iter().position(|c| *c == b'*'),
        pattern.iter().rposition(|c| *c == b'*'),
    ) else {
        return same(pattern, name);
    };
    let (first, last) = (&pattern[..lo], &pattern[hi + 1..]);
    if name.len() < first.len() + last.len()
        || !same(first, &name[..first.len()])
        || !same(last, &name[name.len() - last.len()..])
    {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    if lo < hi {
        for p in pattern[lo + 1..hi].split(|c| *c == b'*') {
            if p.len() > rest.len() {
                return false;
            }
            match (0..=rest.len() - p.len()).find(|&i| same(p, &rest[i..i + p.len()])) {
                Some(i) => rest = &rest[i + p.len()..],
                None => return false,
            }
        }
    }
    true
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
        assert!(matches_ignore_case("*_TO_human*", "transfer_to_Human_agents"));
        assert!(!matches_ignore_case("a*xyz*b", "axyb"));
        assert!(matches("é*", "été"), "bytes of UTF-8 compare as themselves");
    }
}
