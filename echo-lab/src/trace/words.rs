//! Reading the runtimes' trace steps, which are sentences: the two helpers the drawings share
//! ([`super::seqdiag`] and [`super::timeline`]).

/// `text` up to (not including) the first of `stops`, trimmed.
pub(crate) fn before<'a>(text: &'a str, stops: &[&str]) -> &'a str {
    let end = stops.iter().filter_map(|s| text.find(s)).min().unwrap_or(text.len());
    text[..end].trim()
}

/// The number after `word` in `text` ("result 7" → 7).
pub(crate) fn number_after(text: &str, word: &str) -> Option<i64> {
    let rest = &text[text.find(word)? + word.len()..];
    let digits: String = rest.trim_start().chars().take_while(|c| c.is_ascii_digit() || *c == '-').collect();
    digits.parse().ok()
}
