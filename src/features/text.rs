//! Output text features: length and lexicon scores (tone, hedging,
//! confidence, refusal), so tone drift can be charted like any number.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::OnceLock;

/// The lexicons, in score order: (name, file contents).
pub const LEXICON_FILES: [(&str, &str); 6] = [
    ("apology", include_str!("../../lexicons/apology.txt")),
    ("hostility", include_str!("../../lexicons/hostility.txt")),
    ("politeness", include_str!("../../lexicons/politeness.txt")),
    ("hedging", include_str!("../../lexicons/hedging.txt")),
    ("confidence", include_str!("../../lexicons/confidence.txt")),
    ("refusal", include_str!("../../lexicons/refusal.txt")),
];

/// Number of lexicons (and of lexicon scores per output).
pub const N_LEXICONS: usize = LEXICON_FILES.len();

/// Index of the confidence lexicon, for calibration drift.
pub const CONFIDENCE: usize = 4;

/// Scores of one LLM output.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TextScores {
    /// Characters.
    pub chars: u32,
    /// Words (runs of letters, digits, `'` and `%`).
    pub words: u32,
    /// Phrase hits per lexicon, in [`LEXICON_FILES`] order.
    pub lexicon: [u32; N_LEXICONS],
}

/// Compiled lexicons: first word → phrases (as word lists) with their lexicon.
pub struct Lexicons {
    by_first: HashMap<String, Vec<(usize, Vec<String>)>, crate::features::sequence::FnvState>,
    /// Version line common to all files (`1`), recorded in baselines.
    pub version: String,
    /// SHA-256 over all lexicon files, recorded in baselines.
    pub hash: String,
}

impl Lexicons {
    /// The lexicons built into this binary.
    pub fn builtin() -> &'static Lexicons {
        static L: OnceLock<Lexicons> = OnceLock::new();
        L.get_or_init(|| Lexicons::compile(&LEXICON_FILES))
    }

    /// Compiles lexicon files.
    pub fn compile(files: &[(&str, &str)]) -> Lexicons {
        let mut by_first: HashMap<String, Vec<(usize, Vec<String>)>, crate::features::sequence::FnvState> =
            HashMap::default();
        let mut hasher = Sha256::new();
        let mut version = String::new();
        for (i, (name, text)) in files.iter().enumerate() {
            hasher.update(name.as_bytes());
            hasher.update([0]);
            hasher.update(text.as_bytes());
            for line in text.lines() {
                let line = line.trim();
                if let Some(v) = line.strip_prefix("# version:") {
                    version = v.trim().to_string();
                    continue;
                }
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let mut words = Vec::new();
                for_each_word(line, |w| words.push(w.to_string()));
                if let Some(first) = words.first().cloned() {
                    by_first.entry(first).or_default().push((i, words));
                }
            }
        }
        for phrases in by_first.values_mut() {
            phrases.sort_by_key(|p| std::cmp::Reverse(p.1.len())); // longest first
        }
        Lexicons {
            by_first,
            version,
            hash: hex::encode(hasher.finalize()),
        }
    }

    /// Scores one text.
    pub fn score(&self, text: &str) -> TextScores {
        let (lowered, spans) = words(text);
        let word = |i: usize| &lowered[spans[i].0..spans[i].1];
        let mut lexicon = [0u32; N_LEXICONS];
        // Words already inside a matched phrase of a lexicon do not match again
        // for that lexicon ("i'm sorry" is one apology, not two).
        let mut covered = [0usize; N_LEXICONS];
        for i in 0..spans.len() {
            if let Some(phrases) = self.by_first.get(word(i)) {
                for (lex, phrase) in phrases {
                    if i >= covered[*lex]
                        && spans.len() - i >= phrase.len()
                        && phrase.iter().enumerate().all(|(k, p)| word(i + k) == p)
                    {
                        covered[*lex] = i + phrase.len();
                        lexicon[*lex] += 1;
                    }
                }
            }
        }
        TextScores {
            chars: if text.is_ascii() {
                text.len() as u32
            } else {
                text.chars().count() as u32
            },
            words: spans.len() as u32,
            lexicon,
        }
    }
}

/// The lower-cased text (with ’ as ') and the byte spans of its words: runs
/// of letters, digits, ' and %, trimmed of apostrophes at either end.
fn words(text: &str) -> (String, Vec<(usize, usize)>) {
    let mut spans = Vec::new();
    let mut push = |start: usize, end: usize, bytes: &[u8]| {
        let (mut a, mut b) = (start, end);
        while a < b && bytes[a] == b'\'' {
            a += 1;
        }
        while b > a && bytes[b - 1] == b'\'' {
            b -= 1;
        }
        if a < b {
            spans.push((a, b));
        }
    };
    if text.is_ascii() {
        let lowered = text.to_ascii_lowercase();
        let bytes = lowered.as_bytes();
        let mut start = None;
        for (i, &c) in bytes.iter().enumerate() {
            let w = c.is_ascii_alphanumeric() || c == b'\'' || c == b'%';
            match (w, start) {
                (true, None) => start = Some(i),
                (false, Some(s)) => {
                    push(s, i, bytes);
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            push(s, bytes.len(), bytes);
        }
        return (lowered, spans);
    }
    let lowered = text.to_lowercase().replace('’', "'");
    let bytes = lowered.as_bytes();
    let mut start = None;
    for (i, c) in lowered.char_indices() {
        let w = c.is_alphanumeric() || c == '\'' || c == '%';
        match (w, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                push(s, i, bytes);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        push(s, bytes.len(), bytes);
    }
    (lowered, spans)
}

/// Calls `f` with each lower-cased word of `text`.
fn for_each_word(text: &str, mut f: impl FnMut(&str)) {
    let (lowered, spans) = words(text);
    for (a, b) in spans {
        f(&lowered[a..b]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_whole_words_and_phrases_once() {
        let l = Lexicons::builtin();
        let s = l.score("I'm sorry, I am SORRY. Unfortunately I can’t do that; perhaps later? Thank you!");
        assert_eq!(
            s.lexicon[0], 3,
            "sorry (via i'm sorry), i am sorry, unfortunately: {s:?}"
        );
        assert_eq!(s.lexicon[5], 1, "i can't");
        assert_eq!(s.lexicon[3], 1, "perhaps");
        assert_eq!(s.lexicon[2], 1, "thank you");
        assert_eq!(s.words, 14);
        assert_eq!(
            l.score("Your flight on May 20").lexicon[3],
            0,
            "the month is not a hedge"
        );
        assert_eq!(
            l.score("sorryness mayhem").lexicon,
            [0; N_LEXICONS],
            "no partial-word hits"
        );
        assert_eq!(l.score("100% sure").lexicon[CONFIDENCE], 1);
    }

    #[test]
    fn lexicons_are_versioned_and_hashed() {
        let l = Lexicons::builtin();
        assert_eq!(l.version, "1");
        assert_eq!(l.hash.len(), 64);
    }
}
