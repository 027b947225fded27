//! Drafts for speculative decoding, without a draft model: the tokens that followed the
//! longest earlier occurrence of what a sequence ends with, in its own prompt and output
//! (prompt lookup), else in what earlier requests of the model read and wrote (an n-gram
//! table). Rewrites, quotes and conversations that revisit earlier answers repeat their
//! context, so a draft is often the model's next tokens; the engine verifies it in one batch
//! (see `engine`).
//!
//! How long a draft is worth making depends on two things this module measures as it
//! runs: how often drafts are accepted, per token, by where they come from (a draft after
//! a 2-token match is a guess, one after a 30-token match a copy; [`DraftStats`]), and what
//! a decode step costs at each batch size (on a CPU the cost per token falls in steps as
//! the batch grows: here a 64-token batch costs less than a 48-token one; [`StepCosts`]).
//! Each step the engine picks the draft length that maximises expected tokens per second
//! over its sequences ([`DraftPlan`]); batch sizes never measured are assumed cheap, so
//! that they get tried once and then priced by what they cost. A draft the plan finds not
//! worth its step is not lost as evidence: the drafter follows it as a shadow over the
//! tokens the model writes next, and how it would have fared counts for its source as a
//! verified draft does. Without that, a source whose drafts look too dear to verify (on a
//! machine where a batch of two tokens costs twice one) would never be tried, so never
//! shown to be right. The measuring and the plan are in `plan`; here, where drafts come
//! from.

use std::collections::VecDeque;

use crate::model::Token;

mod plan;

pub use plan::{DraftPlan, DraftStats, StepCosts};

/// The shortest suffix worth looking up: a single token matches anywhere.
const MIN_MATCH: usize = 2;
/// Matches are measured up to this length (a longer one is as good).
const MAX_MATCH: usize = 32;
/// The longest draft.
pub const MAX_DRAFT: usize = 63;

/// One sequence's drafting state: what it drafts from, and how its last draft fared.
///
/// While the output copies its context, the drafter follows the copy (where in the context
/// the next token should come from) instead of searching again. Where the copy changes
/// something and then goes on copying (a rename in a rewrite), the drafter learns the
/// change, old tokens to new, and makes it in its later drafts: without that, each renamed
/// occurrence refuses a draft and leaves a step or two with nothing to draft from.
#[derive(Debug)]
pub struct Drafter {
    /// The prompt, then every sampled token.
    context: Vec<Token>,
    last: Outcome,
    /// Where the output is copying from, while it does.
    follow: Option<Follow>,
    /// Where the output last stopped copying: the context position of the token it did
    /// not copy, and the context's length then (where its own tokens begin).
    diverged: Option<(usize, usize)>,
    /// Changes seen in the copy, applied to drafts; the first whose `old` matches applies.
    edits: Vec<Edit>,
    next_edit: u32,
    /// Whether the output has ended a paragraph of its own, as far as the context's first
    /// `scanned` tokens (see [`Drafter::end_at_paragraph`]).
    output_paragraphs: bool,
    scanned: usize,
    /// A draft not verified, compared with the output as it comes.
    shadow: Option<Shadow>,
}

/// A draft left unverified, and how many of its tokens the output has agreed with so far.
#[derive(Debug)]
struct Shadow {
    source: Source,
    tokens: Vec<Token>,
    agreed: usize,
}

/// How a shadowed draft fared: `agreed` of its `drafted` tokens were the model's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub source: Source,
    pub drafted: usize,
    pub agreed: usize,
}

/// A copy in progress: `at` is the context position of the next token to copy; `queue`
/// holds tokens of an applied edit not yet copied, with the edit's id.
#[derive(Debug, Clone, Default)]
struct Follow {
    at: usize,
    queue: VecDeque<(Token, u32)>,
    /// Tokens known to agree (the match that started it, then each one copied).
    matched: usize,
}

/// `old` tokens of the context written as `new` in the output.
#[derive(Debug)]
struct Edit {
    id: u32,
    old: Vec<Token>,
    new: Vec<Token>,
}

/// The longest change learned, either side.
const MAX_EDIT: usize = 16;
/// Changes kept per sequence.
const MAX_EDITS: usize = 8;

/// How a sequence's last draft fared: a sequence copying text goes on copying, one
/// writing new text goes on writing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It has not drafted yet.
    None,
    /// Accepted whole.
    Whole,
    /// Refused before its end.
    Cut,
}

/// Where a draft came from, and what came before it: what says how likely it is right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    pub from: From,
    pub after: Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    /// The sequence's own context, after a match of this many tokens.
    Context(usize),
    /// The n-gram table (a match of `NGRAM` tokens in an earlier request).
    Table,
}

impl Drafter {
    pub fn new(prompt: &[Token]) -> Drafter {
        Drafter {
            context: prompt.to_vec(),
            last: Outcome::None,
            follow: None,
            diverged: None,
            edits: Vec::new(),
            next_edit: 0,
            output_paragraphs: false,
            scanned: prompt.len(),
            shadow: None,
        }
    }

    /// Cuts `draft` before its first paragraph break (`ends_paragraph`: a token whose text
    /// has a blank line) while the output has none of its own. An answer of one paragraph,
    /// a quote, ends where the paragraph it copies ends; a draft that runs on into the next
    /// paragraph is refused there, and each token past the end costs its share of the step
    /// (on a CPU, most of what a token of output costs). Once the output has a paragraph
    /// break (a rewrite's code, an answer of several paragraphs), drafts run on.
    pub fn end_at_paragraph(&mut self, draft: &mut Vec<Token>, ends_paragraph: &mut impl FnMut(Token) -> bool) {
        if !self.output_paragraphs {
            self.output_paragraphs = self.context[self.scanned..].iter().any(|&t| ends_paragraph(t));
            self.scanned = self.context.len();
        }
        if !self.output_paragraphs {
            if let Some(end) = draft.iter().position(|&t| ends_paragraph(t)) {
                draft.truncate(end);
            }
        }
    }

    /// What a draft from `from` would be: its source, given this sequence's last draft.
    pub fn source(&self, from: From) -> Source {
        Source { from, after: self.last }
    }

    /// How its last draft fared.
    pub fn record(&mut self, drafted: usize, accepted: usize) {
        if drafted > 0 {
            self.last = if accepted == drafted { Outcome::Whole } else { Outcome::Cut };
        }
    }

    /// Follows `draft`, which was not verified, over the tokens the output has next (unless
    /// it follows one already: one at a time, so that no token counts twice).
    pub fn shadow(&mut self, source: Source, draft: Vec<Token>) {
        if self.shadow.is_none() && !draft.is_empty() {
            self.shadow = Some(Shadow { source, tokens: draft, agreed: 0 });
        }
    }

    /// A sampled token, in order: the copy goes on if it is the token copied next, else
    /// it stops there (and an edit that made the refused token is forgotten). Returns how
    /// the shadowed draft fared, once the token decides it.
    pub fn push(&mut self, token: Token) -> Option<Verdict> {
        let verdict = self.shadow.as_mut().and_then(|shadow| {
            let agrees = shadow.tokens[shadow.agreed] == token;
            shadow.agreed += usize::from(agrees);
            (!agrees || shadow.agreed == shadow.tokens.len()).then_some(Verdict {
                source: shadow.source,
                drafted: shadow.tokens.len(),
                agreed: shadow.agreed,
            })
        });
        if verdict.is_some() {
            self.shadow = None;
        }
        if let Some(mut follow) = self.follow.take() {
            let from_source = follow.queue.is_empty().then_some(follow.at);
            match self.copy_next(&mut follow) {
                Some((next, _)) if next == token => {
                    follow.matched += 1;
                    self.follow = Some(follow);
                }
                refused => {
                    if let Some((_, Some(edit))) = refused {
                        self.edits.retain(|e| e.id != edit);
                    }
                    self.diverged = from_source.map(|at| (at, self.context.len()));
                }
            }
        }
        self.context.push(token);
        verdict
    }

    pub fn context(&self) -> &[Token] {
        &self.context
    }

    /// Up to `room` tokens the output would have next if it goes on copying (with the
    /// changes it made so far), and how many tokens it has been copying for (at most
    /// `MAX_MATCH`). Starts following the longest earlier occurrence of the context's
    /// end when it follows nothing.
    pub fn lookup(&mut self, room: usize) -> (Vec<Token>, usize) {
        if self.follow.is_none() {
            self.start_following();
        }
        let Some(follow) = self.follow.as_ref() else { return (Vec::new(), 0) };
        let mut ahead = follow.clone();
        let mut draft = Vec::with_capacity(room);
        while draft.len() < room {
            let Some((token, _)) = self.copy_next(&mut ahead) else { break };
            draft.push(token);
        }
        (draft, follow.matched.min(MAX_MATCH))
    }

    fn start_following(&mut self) {
        let Some((p, len)) = longest_match(&self.context) else { return };
        // A copy that stopped and now goes on: what it wrote instead of what it skipped
        // is a change to make again.
        if let Some((skipped, wrote)) = self.diverged.take() {
            let (old_end, new_end) = (p + 1 - len, self.context.len() - len);
            let plausible =
                skipped < old_end && wrote < new_end && old_end - skipped <= MAX_EDIT && new_end - wrote <= MAX_EDIT;
            if plausible {
                let (old, new) = (&self.context[skipped..old_end], &self.context[wrote..new_end]);
                for (old, new) in changes(old, new) {
                    if !self.edits.iter().any(|e| e.old == old) {
                        self.edits.insert(0, Edit { id: self.next_edit, old, new });
                        self.next_edit += 1;
                        self.edits.truncate(MAX_EDITS);
                    }
                }
            }
        }
        self.follow = Some(Follow { at: p + 1, queue: VecDeque::new(), matched: len });
    }

    /// The next token of a copy, and the edit that made it, if one did.
    fn copy_next(&self, follow: &mut Follow) -> Option<(Token, Option<u32>)> {
        if let Some((token, edit)) = follow.queue.pop_front() {
            return Some((token, Some(edit)));
        }
        let rest = self.context.get(follow.at..).filter(|r| !r.is_empty())?;
        match self.edits.iter().find(|e| rest.starts_with(&e.old)) {
            Some(edit) => {
                follow.at += edit.old.len();
                follow.queue.extend(edit.new.iter().map(|&t| (t, edit.id)));
                follow.queue.pop_front().map(|(t, id)| (t, Some(id)))
            }
            None => {
                follow.at += 1;
                Some((rest[0], None))
            }
        }
    }
}

/// The changes that make `old` into `new`, each as small as it can be: the spans between
/// the tokens they share (a longest common subsequence). A short name renamed twice within
/// a few tokens (`AS o ON o.id` written `AS ord ON ord.id`) is one change, `o` to `ord`,
/// made again wherever `o` comes next; learned whole, it would apply only where all of
/// `o ON o` comes again. A span that inserts or deletes keeps the shared token after it
/// (else before it) as an anchor: a change needs something old to find and something new
/// to write.
fn changes(old: &[Token], new: &[Token]) -> Vec<(Vec<Token>, Vec<Token>)> {
    // lcs[i][j]: the longest common subsequence of old[i..] and new[j..].
    let mut lcs = vec![vec![0u8; new.len() + 1]; old.len() + 1];
    for i in (0..old.len()).rev() {
        for j in (0..new.len()).rev() {
            lcs[i][j] = if old[i] == new[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    // The shared tokens, as (position in old, position in new), then the spans between.
    let mut shared = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < old.len() && j < new.len() {
        if old[i] == new[j] {
            shared.push((i, j));
            (i, j) = (i + 1, j + 1);
        } else if lcs[i + 1][j] >= lcs[i][j + 1] {
            i += 1;
        } else {
            j += 1;
        }
    }
    let mut out = Vec::new();
    let (mut from_old, mut from_new) = (0, 0);
    for k in 0..=shared.len() {
        let (to_old, to_new) = shared.get(k).copied().unwrap_or((old.len(), new.len()));
        let (mut a, mut b) = ((from_old, to_old), (from_new, to_new));
        if a.0 == a.1 && b.0 == b.1 {
            (from_old, from_new) = (to_old + 1, to_new + 1);
            continue;
        }
        if a.0 == a.1 || b.0 == b.1 {
            if k < shared.len() {
                (a.1, b.1) = (a.1 + 1, b.1 + 1);
            } else if k > 0 {
                (a.0, b.0) = (a.0 - 1, b.0 - 1);
            } else {
                break;
            }
        }
        out.push((old[a.0..a.1].to_vec(), new[b.0..b.1].to_vec()));
        (from_old, from_new) = (to_old + 1, to_new + 1);
    }
    out
}

/// Whether a token's text ends a paragraph: it has a blank line.
pub fn ends_paragraph(text: &[u8]) -> bool {
    text.windows(2).any(|w| w == b"\n\n") || text.windows(3).any(|w| w == b"\n\r\n")
}

/// The earlier position whose tokens, up to it, match the longest suffix of `context`
/// (at least `MIN_MATCH`), and that length; the latest such position on ties. Drafting
/// continues after it.
fn longest_match(context: &[Token]) -> Option<(usize, usize)> {
    let n = context.len();
    let last = *context.last()?;
    let mut best: Option<(usize, usize)> = None;
    // Latest first; `p` is a candidate for the position of the last token.
    for p in (0..n.saturating_sub(1)).rev() {
        if context[p] != last {
            continue;
        }
        let len = (1..=MAX_MATCH.min(p + 1)).take_while(|&k| context[p + 1 - k] == context[n - k]).last().unwrap_or(0);
        if len >= MIN_MATCH && best.is_none_or(|(_, l)| len > l) {
            best = Some((p, len));
            if len == MAX_MATCH {
                break;
            }
        }
    }
    // Nothing follows a match at the very end.
    best.filter(|&(p, _)| p + 1 < n)
}

/// What followed each n-gram in the model's earlier requests (prompts and outputs): a
/// hashed table of next tokens, as llama.cpp's `ngram-mod`. Long n-grams make its drafts
/// precise; a collision only costs a refused draft.
pub struct NgramTable {
    next: Vec<Token>,
}

/// Tokens an n-gram spans.
pub const NGRAM: usize = 16;
const TABLE_SLOTS: usize = 1 << 20;
const EMPTY: Token = -1;

impl Default for NgramTable {
    fn default() -> Self {
        NgramTable { next: vec![EMPTY; TABLE_SLOTS] }
    }
}

impl NgramTable {
    fn slot(gram: &[Token]) -> usize {
        let h =
            gram.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &t| (h ^ (t as u32 as u64)).wrapping_mul(0x0100_0000_01b3));
        (h % TABLE_SLOTS as u64) as usize
    }

    /// Learns every n-gram of `tokens` and what followed it.
    pub fn learn(&mut self, tokens: &[Token]) {
        for w in tokens.windows(NGRAM + 1) {
            self.next[Self::slot(&w[..NGRAM])] = w[NGRAM];
        }
    }

    /// Up to `room` tokens, each what followed the n-gram ending before it.
    pub fn chain(&self, context: &[Token], room: usize) -> Vec<Token> {
        if context.len() < NGRAM {
            return Vec::new();
        }
        let mut window: Vec<Token> = context[context.len() - NGRAM..].to_vec();
        let mut out = Vec::new();
        while out.len() < room {
            let next = self.next[Self::slot(&window[window.len() - NGRAM..])];
            if next == EMPTY {
                break;
            }
            out.push(next);
            window.push(next);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_latest_match_is_continued() {
        // ... 1 2 3 [9 9] ... 7 2 3 [5 5] ... 7 2 3 -> "2 3" occurs twice; the one preceded
        // by 7 is the longer match.
        let context = [1, 2, 3, 9, 9, 4, 7, 2, 3, 5, 5, 8, 7, 2, 3];
        assert_eq!(longest_match(&context), Some((8, 3)));
        assert_eq!(Drafter::new(&context).lookup(10), (vec![5, 5, 8, 7, 2, 3], 3));
        assert_eq!(Drafter::new(&context).lookup(2), (vec![5, 5], 3));
        // Only the last token matches: nothing.
        assert_eq!(longest_match(&[1, 2, 3, 4, 3]), None);
        assert!(Drafter::new(&[5]).lookup(4).0.is_empty());
        // A long match drafts long.
        let text: Vec<Token> = (0..200).collect();
        let mut long = Drafter::new(&[text.clone(), text[..10].to_vec()].concat());
        assert_eq!(long.lookup(MAX_DRAFT), (text[10..10 + MAX_DRAFT].to_vec(), 10));
    }

    #[test]
    fn a_rename_in_a_copy_is_made_in_later_drafts_until_refused() {
        // Code with a name (1) used three times, an instruction, then the output copying it.
        let code = [10, 11, 1, 12, 13, 14, 1, 15, 16, 17, 1, 18, 19];
        let mut d = Drafter::new(&[&code[..], &[90, 91]].concat());
        d.push(10);
        d.push(11);
        assert_eq!(d.lookup(3).0, vec![1, 12, 13]);
        // The output renames 1 to 2, then goes on copying: the next draft renames too.
        for t in [2, 12, 13] {
            d.push(t);
        }
        assert_eq!(d.lookup(8).0, vec![14, 2, 15, 16, 17, 2, 18, 19]);
        // The model keeps the old name this time: the change is no longer made.
        d.push(14);
        d.push(1);
        assert_eq!(d.lookup(4).0, vec![15, 16, 17, 1]);
    }

    #[test]
    fn a_draft_left_unverified_is_judged_by_the_output() {
        let mut d = Drafter::new(&[1, 2, 3, 4, 5, 6, 7, 1, 2]);
        let (draft, matched) = d.lookup(4);
        assert_eq!((draft.as_slice(), matched), (&[3, 4, 5, 6][..], 2));
        let source = d.source(From::Context(matched));
        d.shadow(source, draft);
        d.shadow(source, vec![9]);
        assert_eq!(d.push(3), None);
        assert_eq!(d.push(4), None);
        assert_eq!(d.push(8), Some(Verdict { source, drafted: 4, agreed: 2 }), "one shadow at a time");
        assert_eq!(d.push(5), None, "judged once");
        // Agreed whole: judged at its last token.
        d.shadow(source, vec![6, 7]);
        assert_eq!(d.push(6), None);
        assert_eq!(d.push(7), Some(Verdict { source, drafted: 2, agreed: 2 }));
    }

    #[test]
    fn a_change_is_learned_as_its_smallest_parts() {
        // `AS o ON o .id` written `AS ord ON ord .id`: one rename, twice.
        assert_eq!(changes(&[1, 5, 2], &[7, 5, 8]), vec![(vec![1], vec![7]), (vec![2], vec![8])]);
        assert_eq!(changes(&[1, 5, 1], &[7, 5, 7]), vec![(vec![1], vec![7]), (vec![1], vec![7])]);
        // Insertions and deletions keep a shared token beside them.
        assert_eq!(changes(&[5, 6], &[5, 9, 6]), vec![(vec![6], vec![9, 6])]);
        assert_eq!(changes(&[5, 9], &[5]), vec![(vec![5, 9], vec![5])]);
        assert_eq!(changes(&[1, 2], &[3]), vec![(vec![1, 2], vec![3])]);
        assert!(changes(&[1, 2], &[1, 2]).is_empty());
    }

    #[test]
    fn a_short_name_renamed_twice_nearby_is_renamed_in_later_drafts() {
        // SQL with an alias (1) used three times, the second and third close together.
        let source = [10, 11, 1, 12, 1, 13, 14, 15, 16, 1, 17, 18];
        let mut d = Drafter::new(&[&source[..], &[90, 91]].concat());
        d.push(10);
        d.push(11);
        assert_eq!(d.lookup(3).0, vec![1, 12, 1]);
        // The output writes 2 for 1, twice, before it goes on copying: 13 14 resynchronise.
        for t in [2, 12, 2, 13, 14] {
            d.push(t);
        }
        assert_eq!(d.lookup(4).0, vec![15, 16, 2, 17], "the alias alone is renamed");
    }

    #[test]
    fn a_one_paragraph_answer_drafts_up_to_its_sources_paragraph_end() {
        // Two paragraphs (0 is the break), an instruction, then an answer quoting the first.
        let mut is_break = |t: Token| t == 0;
        let mut d = Drafter::new(&[1, 2, 3, 4, 5, 0, 6, 7, 8, 0, 90, 91]);
        d.push(1);
        d.push(2);
        let mut draft = d.lookup(10).0;
        assert_eq!(draft, vec![3, 4, 5, 0, 6, 7, 8, 0, 90, 91]);
        d.end_at_paragraph(&mut draft, &mut is_break);
        assert_eq!(draft, vec![3, 4, 5], "the quote ends with its paragraph");
        // An answer with a paragraph break of its own drafts on past the source's.
        for t in [3, 4, 5, 0] {
            d.push(t);
        }
        let mut draft = vec![6, 7, 8, 0, 90];
        d.end_at_paragraph(&mut draft, &mut is_break);
        assert_eq!(draft, vec![6, 7, 8, 0, 90]);
        assert!(ends_paragraph(b".\n\n") && ends_paragraph(b"\r\n\r\n") && !ends_paragraph(b";\n"));
    }

    #[test]
    fn the_table_drafts_what_followed_an_earlier_text() {
        let mut table = NgramTable::default();
        let text: Vec<Token> = (100..200).collect();
        table.learn(&text);
        let context: Vec<Token> = [vec![1, 2, 3], text[..30].to_vec()].concat();
        assert_eq!(table.chain(&context, 8), text[30..38].to_vec());
        assert!(table.chain(&[1, 2, 3], 8).is_empty(), "shorter than an n-gram");
        assert!(table.chain(&(500..520).collect::<Vec<_>>(), 8).is_empty(), "never seen");
    }
}
