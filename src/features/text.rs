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

/// Compiled lexicons: phrases as sequences of word ids, indexed by their
/// first word, so scoring a text allocates nothing and compares integers.
pub struct Lexicons {
    vocab: HashMap<String, u32, crate::features::sequence::FnvState>,
    by_first: Vec<Vec<(usize, Vec<u32>)>>,
    /// Bit [`word_bit`] of `prefilter[len]` is set for each lexicon word of
    /// `len` bytes: most other words are ruled out without hashing.
    prefilter: Vec<[u64; PREFILTER_WORDS]>,
    /// Version line of the lexicon files (stored in baselines).
    pub version: String,
    /// SHA-256 over the lexicon files, so a baseline names exactly what scored it.
    pub hash: String,
}

/// Prefilter size per word length, in 64-bit words: 1,024 bits keep the
/// filter sparse (under 4% set for the busiest length of the shipped lexicons).
const PREFILTER_WORDS: usize = 16;

/// The prefilter bit of a (non-empty) word, from its first two and last two
/// bytes: (index into the filter, bit).
fn word_bit(w: &[u8]) -> (usize, u64) {
    let n = w.len();
    let key = u64::from(w[0])
        | u64::from(w[n.min(2) - 1]) << 8
        | u64::from(w[n.saturating_sub(2)]) << 16
        | u64::from(w[n - 1]) << 24;
    let h = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) as usize; // 10 bits
    (h >> 6, 1 << (h & 63))
}

/// Id of a word that is in no lexicon.
const NOT_IN_LEXICON: u32 = u32::MAX;

impl Lexicons {
    /// The lexicons shipped in `lexicons/`.
    pub fn builtin() -> &'static Lexicons {
        static L: OnceLock<Lexicons> = OnceLock::new();
        L.get_or_init(|| Lexicons::compile(&LEXICON_FILES))
    }

    /// Compiles (name, file text) pairs; `# version:` sets the version.
    pub fn compile(files: &[(&str, &str)]) -> Lexicons {
        let mut vocab: HashMap<String, u32, crate::features::sequence::FnvState> = HashMap::default();
        let mut by_first: Vec<Vec<(usize, Vec<u32>)>> = Vec::new();
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
                let mut ids = Vec::new();
                for_each_word(line, |w| {
                    let next = vocab.len() as u32;
                    ids.push(*vocab.entry(w.to_string()).or_insert(next));
                });
                if let Some(&first) = ids.first() {
                    if by_first.len() <= first as usize {
                        by_first.resize(first as usize + 1, Vec::new());
                    }
                    by_first[first as usize].push((i, ids));
                }
            }
        }
        for phrases in &mut by_first {
            phrases.sort_by_key(|p| std::cmp::Reverse(p.1.len())); // longest first
        }
        let max_word_bytes = vocab.keys().map(String::len).max().unwrap_or(0);
        let mut prefilter = vec![[0u64; PREFILTER_WORDS]; max_word_bytes + 1];
        for w in vocab.keys() {
            let (i, bit) = word_bit(w.as_bytes());
            prefilter[w.len()][i] |= bit;
        }
        Lexicons {
            vocab,
            by_first,
            prefilter,
            version,
            hash: hex::encode(hasher.finalize()),
        }
    }

    /// Whether a lowercase word may be in the vocabulary (no false negatives).
    fn may_contain(&self, w: &str) -> bool {
        let Some(filter) = self.prefilter.get(w.len()) else {
            return false;
        };
        let (i, bit) = word_bit(w.as_bytes());
        filter[i] & bit != 0
    }

    /// Scores one text: counts of each lexicon's phrases (whole words,
    /// case-insensitive, curly apostrophes folded), words and characters.
    pub fn score(&self, text: &str) -> TextScores {
        thread_local! {
            static IDS: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        IDS.with_borrow_mut(|ids| {
            ids.clear();
            for_each_word(text, |w| {
                let id = if self.may_contain(w) {
                    self.vocab.get(w).copied().unwrap_or(NOT_IN_LEXICON)
                } else {
                    NOT_IN_LEXICON
                };
                ids.push(id);
            });
            let mut lexicon = [0u32; N_LEXICONS];
            // Words already inside a matched phrase of a lexicon do not match again
            // for that lexicon ("i'm sorry" is one apology, not two).
            let mut covered = [0usize; N_LEXICONS];
            for i in 0..ids.len() {
                let Some(phrases) = self.by_first.get(ids[i] as usize) else {
                    continue;
                };
                for (lex, phrase) in phrases {
                    if i >= covered[*lex] && ids.len() - i >= phrase.len() && ids[i..i + phrase.len()] == phrase[..] {
                        covered[*lex] = i + phrase.len();
                        lexicon[*lex] += 1;
                    }
                }
            }
            TextScores {
                chars: if text.is_ascii() {
                    text.len() as u32
                } else {
                    text.chars().count() as u32
                },
                words: ids.len() as u32,
                lexicon,
            }
        })
    }
}

/// Byte classes for the tokenizer: 0 separator, 1 lowercase word byte
/// (a-z, 0-9, ', %), 2 uppercase ASCII letter, 3 part of a non-ASCII char.
const CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = if c >= 0x80 {
            3
        } else if c.is_ascii_uppercase() {
            2
        } else if c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'\'' || c == b'%' {
            1
        } else {
            0
        };
        b += 1;
    }
    t
};

/// Calls `f` with each word of `text`, lowercased: a word is a run of
/// alphanumerics, apostrophes (’ folded to ') and `%`, with apostrophes
/// trimmed from both ends. Lowercase ASCII words are passed without copying.
fn for_each_word(text: &str, mut f: impl FnMut(&str)) {
    let bytes = text.as_bytes();
    let mut emit = |w: &str| {
        let w = if w.starts_with('\'') || w.ends_with('\'') {
            w.trim_matches('\'')
        } else {
            w
        };
        if !w.is_empty() {
            f(w);
        }
    };
    let mut buf = String::new();
    let mut i = 0;
    while i < bytes.len() {
        if CLASS[bytes[i] as usize] == 0 {
            i += 1;
            continue;
        }
        // A run of ASCII word bytes: borrowed as is when already lowercase.
        let start = i;
        let mut upper = false;
        while i < bytes.len() {
            match CLASS[bytes[i] as usize] {
                1 => {}
                2 => upper = true,
                _ => break,
            }
            i += 1;
        }
        if i == bytes.len() || CLASS[bytes[i] as usize] == 0 {
            if upper {
                buf.clear();
                buf.push_str(&text[start..i]);
                buf.make_ascii_lowercase();
                emit(&buf);
            } else {
                emit(&text[start..i]);
            }
            continue;
        }
        // The word goes on with non-ASCII chars: lowercase char by char.
        // Lowercasing may give several chars (İ → i + combining dot): each
        // is classified on its own, as in the lowercased text.
        buf.clear();
        buf.push_str(&text[start..i]);
        buf.make_ascii_lowercase();
        for c in text[i..].chars() {
            if c.is_ascii() && CLASS[c as usize] == 0 {
                break;
            }
            i += c.len_utf8();
            for lc in c.to_lowercase() {
                let lc = if lc == '’' { '\'' } else { lc };
                if lc.is_alphanumeric() || lc == '\'' || lc == '%' {
                    buf.push(lc);
                } else if !buf.is_empty() {
                    emit(&buf);
                    buf.clear();
                }
            }
        }
        if !buf.is_empty() {
            emit(&buf);
        }
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

    /// The straightforward tokenizer (lowercase the whole text, then split),
    /// which the allocation-free one must reproduce word for word.
    fn words_by_lowercasing_first(text: &str) -> Vec<String> {
        let lowered = text.to_lowercase().replace('’', "'");
        let mut out = Vec::new();
        let mut cur = String::new();
        for c in lowered.chars().chain(std::iter::once(' ')) {
            if c.is_alphanumeric() || c == '\'' || c == '%' {
                cur.push(c);
            } else {
                let w = cur.trim_matches('\'');
                if !w.is_empty() {
                    out.push(w.to_string());
                }
                cur.clear();
            }
        }
        out
    }

    proptest::proptest! {
        #[test]
        fn tokenizer_matches_lowercasing_first(text in "[a-zA-Z0-9 '’%.,!?İΣσÄäß\u{307}日本-]{0,40}") {
            let mut got = Vec::new();
            for_each_word(&text, |w| got.push(w.to_string()));
            // Final-sigma lowering (Σ → ς at a word's end) is the one
            // whole-string rule; it never changes where words split.
            let norm = |v: Vec<String>| v.into_iter().map(|w| w.replace('ς', "σ")).collect::<Vec<_>>();
            proptest::prop_assert_eq!(norm(got), norm(words_by_lowercasing_first(&text)));
        }
    }

    #[test]
    fn lexicons_are_versioned_and_hashed() {
        let l = Lexicons::builtin();
        assert_eq!(l.version, "1");
        assert_eq!(l.hash.len(), 64);
    }
}
