//! Reading tool calls out of generated text as it streams: `<tool_call>\n{"name": "f",
//! "arguments": {...}}\n</tool_call>` becomes a call named `f` whose arguments arrive in
//! pieces while the model writes them; text around the calls is content. The markup
//! itself never reaches the client.
//!
//! Small models often leave the tags out and answer with the bare call object: where the
//! model may choose (`tool_choice: auto`), an answer that starts with `{` is read as calls
//! (the grammar makes it one; see `constraint`), as llama.cpp does.

use serde_json::Value;

use crate::constraint::{CALL_CLOSE, CALL_OPEN};

/// What a piece of generated text turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    /// A call begins.
    Call {
        name: String,
    },
    /// More of the current call's arguments (JSON text).
    Arguments(String),
}

/// One choice's parser.
#[derive(Debug, Default)]
pub struct CallParser {
    state: State,
    /// Calls begun so far.
    calls: u32,
    /// An answer that starts with `{` (before any content) is bare calls.
    bare: bool,
    /// Content has been written: a `{` is text from now on.
    wrote_text: bool,
}

#[derive(Debug)]
enum State {
    /// Content; `held` may be the start of a call's opener, or whitespace that is dropped
    /// if a call follows.
    Content { held: String },
    /// Inside a call, before its arguments: `{"name": "f", "arguments": `.
    Head { buf: String, bare: bool },
    /// Inside the arguments value.
    Arguments { scan: Scan, bare: bool },
    /// After the arguments, up to the call's closer (`}` for a bare call).
    Tail { buf: String, bare: bool },
    /// A tagged call in an unexpected shape, read whole up to its closer.
    Whole { buf: String },
}

impl Default for State {
    fn default() -> Self {
        State::Content { held: String::new() }
    }
}

impl CallParser {
    /// `bare`: calls may also come as bare objects (see the module's note).
    pub fn new(bare: bool) -> CallParser {
        CallParser { bare, ..CallParser::default() }
    }

    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        let mut out = Vec::new();
        let mut input = text.to_owned();
        // Each pass consumes `input` or moves to another state with what is left of it.
        while !input.is_empty() {
            input = match std::mem::take(&mut self.state) {
                State::Content { mut held } => {
                    held.push_str(&input);
                    let bare_allowed = self.bare && !self.wrote_text;
                    if bare_allowed && held.trim_start().starts_with('{') {
                        self.state = State::Head { buf: String::new(), bare: true };
                        held.trim_start().to_owned()
                    } else if bare_allowed && held.trim().is_empty() {
                        self.state = State::Content { held };
                        String::new()
                    } else {
                        self.content(held, &mut out)
                    }
                }
                State::Head { mut buf, bare } => {
                    buf.push_str(&input);
                    match read_head(&buf) {
                        Head::Incomplete => {
                            self.state = State::Head { buf, bare };
                            String::new()
                        }
                        Head::Found { name, rest } => {
                            self.calls += 1;
                            out.push(Piece::Call { name });
                            self.state = State::Arguments { scan: Scan::default(), bare };
                            rest
                        }
                        Head::Other if bare => {
                            // Not a call after all: content, as written.
                            self.wrote_text = true;
                            self.state = State::default();
                            buf
                        }
                        Head::Other => {
                            self.state = State::Whole { buf: String::new() };
                            buf
                        }
                    }
                }
                State::Arguments { mut scan, bare } => {
                    let (fragment, rest) = scan.feed(&input);
                    if !fragment.is_empty() {
                        out.push(Piece::Arguments(fragment));
                    }
                    match rest {
                        Some(rest) => {
                            self.state = State::Tail { buf: String::new(), bare };
                            rest
                        }
                        None => {
                            self.state = State::Arguments { scan, bare };
                            String::new()
                        }
                    }
                }
                State::Tail { mut buf, bare } => {
                    buf.push_str(&input);
                    let closer = if bare { "}" } else { CALL_CLOSE };
                    match buf.find(closer) {
                        Some(at) => {
                            self.state = State::default();
                            buf[at + closer.len()..].trim_start().to_owned()
                        }
                        None => {
                            self.state = State::Tail { buf, bare };
                            String::new()
                        }
                    }
                }
                State::Whole { mut buf } => {
                    buf.push_str(&input);
                    match buf.find(CALL_CLOSE) {
                        Some(at) => {
                            out.extend(self.whole_call(&buf[..at]));
                            self.state = State::default();
                            buf[at + CALL_CLOSE.len()..].trim_start().to_owned()
                        }
                        None => {
                            self.state = State::Whole { buf };
                            String::new()
                        }
                    }
                }
            };
        }
        out
    }

    /// Content, up to a call's opener if one came.
    fn content(&mut self, held: String, out: &mut Vec<Piece>) -> String {
        match held.find(CALL_OPEN) {
            Some(at) => {
                let before = held[..at].trim_end();
                if !before.is_empty() {
                    self.wrote_text = true;
                    out.push(Piece::Text(before.to_owned()));
                }
                self.state = State::Head { buf: String::new(), bare: false };
                held[at + CALL_OPEN.len()..].to_owned()
            }
            None => {
                let keep = held.len() - partial_suffix(&held, CALL_OPEN);
                let emit = held[..keep].trim_end().len();
                if emit > 0 {
                    self.wrote_text = true;
                    out.push(Piece::Text(held[..emit].to_owned()));
                }
                self.state = State::Content { held: held[emit..].to_owned() };
                String::new()
            }
        }
    }

    /// What is left at the end: held text that was not a call after all (whitespace after
    /// calls is not content). A call cut off before its name is dropped (the finish reason
    /// says the output was cut).
    pub fn finish(&mut self) -> Vec<Piece> {
        match std::mem::take(&mut self.state) {
            State::Content { held } if !held.is_empty() && (self.calls == 0 || !held.trim().is_empty()) => {
                vec![Piece::Text(held)]
            }
            State::Head { buf, bare: true } if self.calls == 0 => vec![Piece::Text(buf)],
            _ => Vec::new(),
        }
    }

    /// A call that did not start as `{"name": ..., "arguments": ...`: parsed whole.
    fn whole_call(&mut self, text: &str) -> Vec<Piece> {
        let parsed: Option<(String, String)> = serde_json::from_str::<Value>(text.trim()).ok().and_then(|v| {
            let name = v.get("name")?.as_str()?.to_owned();
            let args = v
                .get("arguments")
                .or_else(|| v.get("parameters"))
                .cloned()
                .unwrap_or(Value::Object(Default::default()));
            Some((name, args.to_string()))
        });
        match parsed {
            Some((name, arguments)) => {
                self.calls += 1;
                vec![Piece::Call { name }, Piece::Arguments(arguments)]
            }
            // Not a call at all: it stays what the model wrote.
            None => {
                self.wrote_text = true;
                vec![Piece::Text(format!("{CALL_OPEN}{text}{CALL_CLOSE}"))]
            }
        }
    }
}

enum Head {
    Incomplete,
    Found { name: String, rest: String },
    Other,
}

/// Reads `{"name": "<name>", "arguments": ` (any whitespace between the tokens).
fn read_head(buf: &str) -> Head {
    let rest = match expect(buf, &["{", "\"name\"", ":"]) {
        Ok(rest) => rest.trim_start(),
        Err(head) => return head,
    };
    if rest.is_empty() {
        return Head::Incomplete;
    }
    if !rest.starts_with('"') {
        return Head::Other;
    }
    // The name is a JSON string: find its end, honouring escapes.
    let mut escaped = false;
    let Some(end) = rest.char_indices().skip(1).find_map(|(i, c)| {
        let end = !escaped && c == '"';
        escaped = !escaped && c == '\\';
        end.then_some(i)
    }) else {
        return Head::Incomplete;
    };
    let Ok(name) = serde_json::from_str::<String>(&rest[..=end]) else { return Head::Other };
    match expect(&rest[end + 1..], &[",", "\"arguments\"", ":"]) {
        Ok(rest) => Head::Found { name, rest: rest.to_owned() },
        Err(head) => head,
    }
}

/// `text` after the `tokens` it starts with (whitespace around them skipped); else whether
/// more text may still complete them.
fn expect<'a>(text: &'a str, tokens: &[&str]) -> Result<&'a str, Head> {
    let mut rest = text;
    for expected in tokens {
        rest = rest.trim_start();
        if rest.len() < expected.len() {
            return Err(if expected.starts_with(rest) { Head::Incomplete } else { Head::Other });
        }
        rest = rest.strip_prefix(expected).ok_or(Head::Other)?;
    }
    Ok(rest)
}

/// Where a JSON value ends, read a character at a time.
#[derive(Debug, Default)]
struct Scan {
    started: bool,
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// A number, `true`, `false` or `null`: it ends at the next `,` or `}`.
    scalar: bool,
}

impl Scan {
    /// The part of `input` that belongs to the value, and what follows it once it ended.
    fn feed(&mut self, input: &str) -> (String, Option<String>) {
        let mut fragment = String::new();
        for (i, c) in input.char_indices() {
            if !self.started {
                if c.is_whitespace() {
                    continue;
                }
                self.started = true;
                match c {
                    '{' | '[' => self.depth = 1,
                    '"' => self.in_string = true,
                    _ => self.scalar = true,
                }
                fragment.push(c);
                continue;
            }
            if self.in_string {
                fragment.push(c);
                if self.escaped {
                    self.escaped = false;
                } else if c == '\\' {
                    self.escaped = true;
                } else if c == '"' {
                    self.in_string = false;
                    if self.depth == 0 {
                        return (fragment, Some(input[i + c.len_utf8()..].to_owned()));
                    }
                }
                continue;
            }
            match c {
                '"' => {
                    self.in_string = true;
                    fragment.push(c);
                }
                '{' | '[' => {
                    self.depth += 1;
                    fragment.push(c);
                }
                '}' | ']' if self.depth == 0 => return (fragment, Some(input[i..].to_owned())),
                '}' | ']' => {
                    self.depth -= 1;
                    fragment.push(c);
                    if self.depth == 0 {
                        return (fragment, Some(input[i + 1..].to_owned()));
                    }
                }
                ',' if self.scalar => return (fragment, Some(input[i..].to_owned())),
                _ => fragment.push(c),
            }
        }
        (fragment, None)
    }
}

/// Length of the longest proper prefix of `pattern` that `text` ends with.
fn partial_suffix(text: &str, pattern: &str) -> usize {
    (1..pattern.len()).rev().find(|&k| pattern.is_char_boundary(k) && text.ends_with(&pattern[..k])).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `pieces` and joins what came out: texts, calls as `name(args)`.
    fn run(pieces: &[&str]) -> (Vec<String>, Vec<String>) {
        let mut p = CallParser::default();
        let mut out: Vec<Piece> = pieces.iter().flat_map(|t| p.push(t)).collect();
        out.extend(p.finish());
        let mut texts = Vec::new();
        let mut calls: Vec<String> = Vec::new();
        for piece in out {
            match piece {
                Piece::Text(t) => texts.push(t),
                Piece::Call { name } => calls.push(format!("{name}:")),
                Piece::Arguments(a) => calls.last_mut().expect("arguments after a call").push_str(&a),
            }
        }
        (texts, calls)
    }

    /// Every way of cutting `text` into two pieces.
    fn splits(text: &str) -> impl Iterator<Item = (&str, &str)> {
        (0..=text.len()).filter(|&i| text.is_char_boundary(i)).map(move |i| text.split_at(i))
    }

    #[test]
    fn calls_are_read_however_the_text_is_cut() {
        let text = "<tool_call>\n{\"name\": \"weather\", \"arguments\": {\"city\": \"Pa}ris\", \"d\": [1, {\"x\": \"\\\"\"}]}}\n</tool_call>\n<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>";
        for (a, b) in splits(text) {
            let (texts, calls) = run(&[a, b]);
            assert!(texts.is_empty(), "{a:?} | {b:?}: {texts:?}");
            assert_eq!(
                calls,
                vec!["weather:{\"city\": \"Pa}ris\", \"d\": [1, {\"x\": \"\\\"\"}]}".to_owned(), "now:{}".to_owned()],
                "{a:?} | {b:?}"
            );
        }
    }

    #[test]
    fn text_before_a_call_is_content_and_text_alone_passes() {
        let text = "Let me check. <tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1}}\n</tool_call>";
        for (a, b) in splits(text) {
            let (texts, calls) = run(&[a, b]);
            assert_eq!(
                (texts.concat(), calls),
                ("Let me check.".to_owned(), vec!["f:{\"a\": 1}".to_owned()]),
                "{a:?}|{b:?}"
            );
        }
        let (texts, calls) = run(&["a < b and <tool", "s> are fine\n"]);
        assert_eq!(texts.concat(), "a < b and <tools> are fine\n");
        assert!(calls.is_empty());
    }

    #[test]
    fn bare_calls_are_calls_only_where_allowed_and_only_first() {
        let text = "\n{\"name\": \"f\", \"arguments\": {\"a\": [1]}}\n{\"name\": \"g\", \"arguments\": {}}";
        for (a, b) in splits(text) {
            let mut p = CallParser::new(true);
            let mut out: Vec<Piece> = Vec::new();
            // Arguments arrive in pieces; join them to compare.
            for piece in p.push(a).into_iter().chain(p.push(b)).chain(p.finish()) {
                match (out.last_mut(), piece) {
                    (Some(Piece::Arguments(all)), Piece::Arguments(more)) => all.push_str(&more),
                    (_, piece) => out.push(piece),
                }
            }
            let expected = vec![
                Piece::Call { name: "f".into() },
                Piece::Arguments("{\"a\": [1]}".into()),
                Piece::Call { name: "g".into() },
                Piece::Arguments("{}".into()),
            ];
            assert_eq!(out, expected, "{a:?} | {b:?}");
        }
        // Without the option, or after text, an object is text.
        assert_eq!(run(&[text]).0.concat(), text.trim_end());
        let mut p = CallParser::new(true);
        let mut out = p.push("Here: {\"name\": \"f\"}");
        out.extend(p.finish());
        assert_eq!(out, vec![Piece::Text("Here: {\"name\": \"f\"}".into())]);
        // A leading object that is no call is text too.
        let mut p = CallParser::new(true);
        let mut out = p.push("{\"x\": 1}");
        out.extend(p.finish());
        assert_eq!(out, vec![Piece::Text("{\"x\": 1}".into())]);
    }

    #[test]
    fn odd_calls_are_parsed_whole_and_cut_ones_dropped() {
        let (_, calls) = run(&["<tool_call>{\"arguments\": {\"a\": 1}, \"name\": \"f\"}</tool_call>"]);
        assert_eq!(calls, vec!["f:{\"a\":1}"]);
        let (texts, calls) = run(&["<tool_call>\n{\"name\": \"f\", \"argu"]);
        assert!(texts.is_empty() && calls.is_empty());
        let (texts, calls) = run(&["<tool_call>not json</tool_call>"]);
        assert_eq!((texts, calls.len()), (vec!["<tool_call>not json</tool_call>".to_owned()], 0));
    }
}
