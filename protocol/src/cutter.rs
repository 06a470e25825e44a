//! Where streamed text input (a context) is cut into clauses: the rule
//! the server speaks by, shared so that clients (the load tester) can tell
//! which piece completed a clause.

/// A sentence longer than this (characters) is also cut at `,;:`.
pub const LONG_SENTENCE: usize = 60;
/// Text without any break is cut at the last space before this length.
pub const MAX_CLAUSE: usize = 200;

/// Cuts text that arrives in pieces into complete clauses.
#[derive(Debug, Default)]
pub struct Cutter {
    buffer: String,
}

impl Cutter {
    /// Adds a piece.
    pub fn push(&mut self, text: &str) {
        self.buffer.push_str(text);
    }

    /// Whether text is buffered.
    pub fn is_empty(&self) -> bool {
        self.buffer.trim().is_empty()
    }

    /// Takes every clause that is complete: ended by `.!?` (or, past
    /// [`LONG_SENTENCE`] characters, `,;:`) and then whitespace, or a run
    /// longer than [`MAX_CLAUSE`] cut at its last space.
    pub fn complete(&mut self) -> Vec<String> {
        let mut clauses = Vec::new();
        loop {
            let cut = self.cut_point();
            let Some(at) = cut else { break };
            let clause: String = self.buffer.drain(..at).collect();
            let clause = clause.trim();
            if clause.chars().any(char::is_alphanumeric) {
                clauses.push(clause.to_owned());
            }
        }
        clauses
    }

    /// Takes everything buffered, complete or not (`None` if it has
    /// nothing to speak).
    pub fn rest(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.buffer);
        let rest = rest.trim();
        rest.chars()
            .any(char::is_alphanumeric)
            .then(|| rest.to_owned())
    }

    fn cut_point(&self) -> Option<usize> {
        let mut chars = 0;
        let mut prev: Option<char> = None;
        let mut last_space = None;
        for (i, c) in self.buffer.char_indices() {
            if c.is_whitespace() {
                if let Some(p) = prev {
                    let long = chars > LONG_SENTENCE;
                    if matches!(p, '.' | '!' | '?') || (long && matches!(p, ',' | ';' | ':')) {
                        return Some(i);
                    }
                }
                last_space = Some(i);
            }
            chars += 1;
            if chars > MAX_CLAUSE
                && let Some(space) = last_space
            {
                return Some(space);
            }
            prev = Some(c);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(pieces: &[&str]) -> (Vec<String>, Option<String>) {
        let mut c = Cutter::default();
        let mut clauses = Vec::new();
        for p in pieces {
            c.push(p);
            clauses.extend(c.complete());
        }
        (clauses, c.rest())
    }

    #[test]
    fn clauses_are_cut_as_soon_as_they_are_complete() {
        let (clauses, rest) = cut(&[
            "Hel",
            "lo there",
            ". How",
            " are",
            " you? I am",
            " fi",
            "ne",
        ]);
        assert_eq!(clauses, ["Hello there.", "How are you?"]);
        assert_eq!(rest.as_deref(), Some("I am fine"));
        // A full stop without a following space may be a decimal point.
        let (clauses, rest) = cut(&["Pi is 3.", "14 exactly."]);
        assert!(clauses.is_empty());
        assert_eq!(rest.as_deref(), Some("Pi is 3.14 exactly."));
    }

    #[test]
    fn long_sentences_break_at_commas_and_runs_at_spaces() {
        let long = "This sentence goes on and on and on, well past sixty characters by now, and then more ";
        let (clauses, rest) = cut(&[long]);
        // The first comma comes before 60 characters: no cut there.
        assert_eq!(
            clauses,
            ["This sentence goes on and on and on, well past sixty characters by now,"]
        );
        assert_eq!(rest.as_deref(), Some("and then more"));
        let words = "word ".repeat(60);
        let (clauses, rest) = cut(&[&words]);
        assert!(!clauses.is_empty());
        assert!(clauses.iter().all(|c| c.chars().count() <= MAX_CLAUSE));
        let total: usize = clauses
            .iter()
            .chain(rest.iter())
            .map(|c| c.split_whitespace().count())
            .sum();
        assert_eq!(total, 60, "no word lost or doubled");
        assert_eq!(cut(&["  ...  "]).1, None, "nothing to speak");
    }
}
