//! Pulling the answer text out of responses, as the official CLI does.

use serde_json::Value;

/// The first `output_text` of an `output` message, else the first non-blank text.
pub(super) fn response_text(v: &Value) -> Option<String> {
    let mut fallback = None;
    for item in v["output"].as_array()? {
        for chunk in item["content"].as_array().into_iter().flatten() {
            let Some(text) = chunk["text"].as_str().filter(|t| !t.trim().is_empty()) else { continue };
            if item["type"] == "message" && chunk["type"] == "output_text" {
                return Some(text.to_owned());
            }
            fallback.get_or_insert_with(|| text.to_owned());
        }
    }
    fallback
}

/// A leading `<think>…</think>` block is the model's reasoning, not its answer.
pub(super) fn strip_think(text: &str) -> String {
    let trimmed = text.trim_start();
    match (trimmed.strip_prefix("<think>"), trimmed.find("</think>")) {
        (Some(_), Some(end)) => trimmed[end + "</think>".len()..].to_owned(),
        _ => text.to_owned(),
    }
}

/// Drops a leading `<think>…</think>` block even when it arrives split across chunks.
#[derive(Default)]
pub(super) struct ThinkFilter {
    held: String,
    done: bool,
}

impl ThinkFilter {
    pub(super) fn push(&mut self, piece: &str) -> String {
        if self.done {
            return piece.to_owned();
        }
        self.held.push_str(piece);
        let start = self.held.trim_start();
        if "<think>".starts_with(start) && start.len() < "<think>".len() {
            return String::new(); // could still become a think block
        }
        if !start.starts_with("<think>") {
            self.done = true;
            return std::mem::take(&mut self.held);
        }
        match start.find("</think>") {
            Some(end) => {
                self.done = true;
                let rest = start[end + "</think>".len()..].to_owned();
                self.held.clear();
                rest
            }
            None => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn think_blocks_are_dropped_across_chunks() {
        let mut f = ThinkFilter::default();
        let out: String =
            ["<think>hidden", " reasoning</think>", "Hello", " from", " mock", "!"].iter().map(|p| f.push(p)).collect();
        assert_eq!(out, "Hello from mock!");
        let mut plain = ThinkFilter::default();
        assert_eq!(plain.push("<t"), "");
        assert_eq!(plain.push("able>"), "<table>");
        assert_eq!(strip_think("<think>x</think>Hi"), "Hi");
    }
}
