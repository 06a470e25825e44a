//! Text → clauses. Synthesis runs clause by clause so that the first frame
//! leaves after the first clause, not after the whole text.
//!
//! Sentences end at `.`, `!` or `?` followed by whitespace (so `3.14` stays
//! whole). A sentence longer than `long_sentence_chars` (default 60) is split further at
//! `,`, `;` and `:`; a piece still longer than `max_clause_chars` (no
//! punctuation at all) is split at the last space before the limit.

/// One unit of synthesis. How it is spoken is its request's
/// ([`Speech`](crate::request::Speech)).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Clause {
    /// The clause's text, its terminating punctuation included.
    pub text: String,
    /// The punctuation that ends it, if any: one of `.,;:!?`.
    pub terminator: Option<char>,
}

/// Where to split text.
#[derive(Debug, Clone, Copy)]
pub struct SplitOptions {
    /// Sentences longer than this (in characters) are split at `,;:`.
    pub long_sentence_chars: usize,
    /// No clause is longer than this many characters.
    pub max_clause_chars: usize,
}

impl Default for SplitOptions {
    fn default() -> Self {
        Self {
            long_sentence_chars: 60,
            max_clause_chars: 300,
        }
    }
}

const SENTENCE_END: &[char] = &['.', '!', '?'];
const CLAUSE_END: &[char] = &[',', ';', ':'];

/// Splits `text` into clauses; pieces with nothing to speak (no letter or
/// digit) are dropped.
pub fn split_clauses(text: &str, opts: SplitOptions) -> Vec<Clause> {
    let normalized = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut clauses = Vec::new();
    for sentence in split_after(&normalized, SENTENCE_END) {
        let pieces = if sentence.chars().count() > opts.long_sentence_chars {
            split_after(sentence, CLAUSE_END)
        } else {
            vec![sentence]
        };
        for piece in pieces {
            for part in split_long(piece, opts.max_clause_chars) {
                if part.chars().any(char::is_alphanumeric) {
                    clauses.push(Clause {
                        text: part.to_owned(),
                        terminator: part.chars().last().filter(|c| ".,;:!?".contains(*c)),
                    });
                }
            }
        }
    }
    clauses
}

/// Splits after any of `ends` that is followed by a space or the end of the
/// text; the pieces are trimmed.
fn split_after<'a>(text: &'a str, ends: &[char]) -> Vec<&'a str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let at_boundary = chars.peek().is_none_or(|&(_, next)| next == ' ');
        if ends.contains(&c) && at_boundary {
            let end = i + c.len_utf8();
            pieces.push(text[start..end].trim());
            start = end;
        }
    }
    if start < text.len() {
        pieces.push(text[start..].trim());
    }
    pieces.retain(|p| !p.is_empty());
    pieces
}

/// Splits at the last space before every `max_chars` characters.
fn split_long(text: &str, max_chars: usize) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = text;
    while rest.chars().count() > max_chars {
        let limit = rest
            .char_indices()
            .nth(max_chars)
            .map_or(rest.len(), |(i, _)| i);
        let cut = rest[..limit].rfind(' ').filter(|&i| i > 0).unwrap_or(limit);
        parts.push(rest[..cut].trim());
        rest = rest[cut..].trim_start();
    }
    if !rest.is_empty() {
        parts.push(rest);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(text: &str) -> Vec<String> {
        split_clauses(text, SplitOptions::default())
            .into_iter()
            .map(|c| c.text)
            .collect()
    }

    #[test]
    fn splits_sentences_and_keeps_terminators() {
        let clauses = split_clauses(
            "The quick brown fox.  This is a test! Is it?",
            SplitOptions::default(),
        );
        assert_eq!(clauses.len(), 3);
        assert_eq!(clauses[0].text, "The quick brown fox.");
        assert_eq!(clauses[0].terminator, Some('.'));
        assert_eq!(clauses[1].terminator, Some('!'));
        assert_eq!(clauses[2].terminator, Some('?'));
    }

    #[test]
    fn keeps_decimals_and_unterminated_text_whole() {
        assert_eq!(texts("Pi is 3.14 roughly"), vec!["Pi is 3.14 roughly"]);
        let clauses = split_clauses("no punctuation", SplitOptions::default());
        assert_eq!(clauses[0].terminator, None);
    }

    #[test]
    fn splits_long_sentences_at_commas_only() {
        let short = "First, a short one.";
        assert_eq!(texts(short), vec![short]);
        let long = format!(
            "{}, {}; {}.",
            "a".repeat(30),
            "b".repeat(20),
            "c".repeat(10)
        );
        assert_eq!(
            texts(&long),
            vec![
                format!("{},", "a".repeat(30)),
                format!("{};", "b".repeat(20)),
                format!("{}.", "c".repeat(10))
            ]
        );
    }

    #[test]
    fn caps_clauses_without_punctuation_at_a_space() {
        let words = "word ".repeat(200);
        let clauses = split_clauses(&words, SplitOptions::default());
        assert!(clauses.len() >= 3);
        for c in &clauses {
            assert!(c.text.chars().count() <= 300, "{}", c.text.len());
            assert!(!c.text.starts_with(' ') && !c.text.ends_with(' '));
        }
        let joined: Vec<&str> = clauses.iter().flat_map(|c| c.text.split(' ')).collect();
        assert_eq!(joined.len(), 200, "no word lost or cut");
    }

    #[test]
    fn drops_pieces_with_nothing_to_speak() {
        assert!(texts(" ... !? ").is_empty());
        assert_eq!(texts("Hi. ... there."), vec!["Hi.", "there."]);
    }
}
