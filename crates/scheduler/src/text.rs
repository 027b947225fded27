//! Turning sampled token bytes into safe output text.

/// Decodes a byte stream into UTF-8 text incrementally: a character split across tokens
/// is held back until complete; invalid bytes become U+FFFD.
#[derive(Debug, Default)]
pub struct Utf8Decoder {
    pending: Vec<u8>,
}

impl Utf8Decoder {
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match e.error_len() {
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                        None => {
                            // An incomplete character at the end: wait for more bytes.
                            self.pending.drain(..valid);
                            return out;
                        }
                    }
                }
            }
        }
    }

    /// Whatever is left at the end of generation.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

/// Finds stop strings in streamed text. Text that could be the start of a stop string is
/// held back until it is known not to be, so a stop string is never emitted, even when it
/// arrives split across tokens.
#[derive(Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

/// The result of feeding text to a [`StopMatcher`].
#[derive(Debug, PartialEq, Eq)]
pub struct Matched {
    /// Text that is safe to emit now.
    pub text: String,
    /// A stop string was found; `text` ends right before it.
    pub stopped: bool,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        StopMatcher { stops, held: String::new() }
    }

    pub fn push(&mut self, text: &str) -> Matched {
        if self.stops.is_empty() {
            return Matched { text: text.to_owned(), stopped: false };
        }
        self.held.push_str(text);
        if let Some(at) = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min() {
            self.held.truncate(at);
            return Matched { text: std::mem::take(&mut self.held), stopped: true };
        }
        let keep = self.stops.iter().map(|s| self.partial_suffix(s)).max().unwrap_or(0);
        let emit = self.held.len() - keep;
        let text = self.held[..emit].to_owned();
        self.held.drain(..emit);
        Matched { text, stopped: false }
    }

    /// Text held back at the end of generation (it was not a stop string after all).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Length of the longest proper prefix of `stop` that the held text ends with.
    fn partial_suffix(&self, stop: &str) -> usize {
        stop.char_indices().map(|(i, _)| i).skip(1).filter(|&k| self.held.ends_with(&stop[..k])).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_tokens() {
        let mut d = Utf8Decoder::default();
        let bytes = "é€".as_bytes();
        assert_eq!(d.push(&bytes[..1]), "");
        assert_eq!(d.push(&bytes[1..3]), "é");
        assert_eq!(d.push(&bytes[3..]), "€");
        assert_eq!(d.push(&[0xff, b'a']), "\u{fffd}a");
        assert_eq!(d.push(&[0xe2]), "");
        assert_eq!(d.finish(), "\u{fffd}");
    }

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            let r = m.push(p);
            out.push_str(&r.text);
            if r.stopped {
                return (out, true);
            }
        }
        out.push_str(&m.finish());
        (out, false)
    }

    #[test]
    fn stop_across_boundaries_is_never_leaked() {
        assert_eq!(run(&["END"], &["ab", "cE", "N", "Dxyz"]), ("abc".into(), true));
        assert_eq!(run(&["END"], &["abEN", "x"]), ("abENx".into(), false));
        assert_eq!(run(&["\n\n", "STOP"], &["a\n", "\nb"]), ("a".into(), true));
        assert_eq!(run(&["xy"], &["aaa"]), ("aaa".into(), false));
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
        // The earliest stop wins when two match.
        assert_eq!(run(&["cd", "b"], &["abcd"]), ("a".into(), true));
        // Multi-byte stop strings are split on char boundaries only.
        assert_eq!(run(&["é!"], &["aé", "!"]), ("a".into(), true));
    }

    #[test]
    fn held_text_is_released_when_it_stops_matching() {
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(m.push("aE").text, "a");
        assert_eq!(m.push("x").text, "Ex");
    }
}
