//! Texts to send: a built-in mix of short, medium and long texts, or one
//! text per line of a file.

/// Short texts: a few words.
const SHORT: &[&str] = &[
    "Hello there.",
    "Your order has shipped.",
    "Turn left in two hundred meters.",
    "The meeting starts in five minutes.",
];

/// Medium texts: a sentence or two.
const MEDIUM: &[&str] = &[
    "The quick brown fox jumps over the lazy dog, and the dog, unimpressed, goes back to sleep.",
    "Thank you for calling. Your call is important to us, and an agent will be with you shortly.",
    "Tomorrow will be cloudy in the morning, with sunny spells in the afternoon and a light breeze.",
];

/// Long texts: a paragraph.
const LONG: &[&str] = &[
    "Streaming speech must start quickly and never stall. A listener notices a gap of a tenth \
     of a second, and a silence of half a second feels like a dropped call. That is why the \
     worker speaks clause by clause, sending each piece as soon as it exists, while the \
     orchestrator checks every frame and passes it on without waiting for the rest.",
    "The history of the telephone is a story of many inventors. In the eighteen seventies, \
     several engineers raced to send the human voice over a wire, and each of them believed \
     that he was the first. Early calls were faint and noisy, and operators had to shout to be \
     heard across a town.",
];

/// Which built-in texts to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mix {
    /// Short texts only.
    Short,
    /// Medium texts only.
    Medium,
    /// Long texts only.
    Long,
    /// All of them: mostly short and medium, some long.
    Mixed,
}

/// The built-in corpus for `mix`.
pub fn builtin(mix: Mix) -> Vec<String> {
    let pick: Vec<&[&str]> = match mix {
        Mix::Short => vec![SHORT],
        Mix::Medium => vec![MEDIUM],
        Mix::Long => vec![LONG],
        // Short and medium twice: a mix weighted towards interactive use.
        Mix::Mixed => vec![SHORT, SHORT, MEDIUM, MEDIUM, LONG],
    };
    pick.into_iter()
        .flatten()
        .map(|s| (*s).to_owned())
        .collect()
}

/// One text per non-empty line of `path`.
pub fn from_file(path: &std::path::Path) -> std::io::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_holds_every_length() {
        let all = builtin(Mix::Mixed);
        assert!(all.iter().any(|t| t.len() < 40));
        assert!(all.iter().any(|t| (60..150).contains(&t.len())));
        assert!(all.iter().any(|t| t.len() > 250));
        assert!(builtin(Mix::Short).iter().all(|t| t.len() < 40));
    }
}
