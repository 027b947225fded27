//! The prefix index: a radix tree over the token prefixes whose KV entries are in the
//! context, and the sequence that holds each.
//!
//! The KV cache is one pool of cells shared by all sequences (llama.cpp's unified KV
//! cache): a cell belongs to every sequence it was copied to, so a prefix computed once is
//! read by any number of sequences. The tree mirrors that. A node is a run of tokens whose
//! cells belong to exactly the sequences of the leaves below it, and every leaf is held by
//! one sequence, its *owner*: running, or idle after its request ended (the cache). So the
//! cells in use are the tokens in the tree, each counted once, and dropping a leaf frees
//! exactly its own tokens' cells.
//!
//! A new request walks the tree for its longest cached prefix, copies it into its own
//! sequence (no data moves: the cells gain a sequence id) and computes only the rest.
//! Idle leaves are dropped least recently used first when cells or sequence ids run out.

use crate::model::{KvCells, SeqId, Token};

pub type NodeId = usize;

const ROOT: NodeId = 0;

#[derive(Debug)]
struct Node {
    parent: NodeId,
    children: Vec<NodeId>,
    /// Position of the first token.
    start: usize,
    tokens: Vec<Token>,
    /// The sequence holding this node's path; set exactly on leaves.
    owner: Option<SeqId>,
    /// The owner is running: the leaf grows and must not be dropped.
    running: bool,
    last_used: u64,
}

impl Node {
    fn end(&self) -> usize {
        self.start + self.tokens.len()
    }
}

/// Where a prompt's longest cached prefix ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    pub node: NodeId,
    /// Tokens of `node` that match.
    pub offset: usize,
    /// Prompt tokens matched in all.
    pub len: usize,
}

#[derive(Debug)]
pub struct PrefixTree {
    nodes: Vec<Option<Node>>,
    free_nodes: Vec<NodeId>,
    /// The leaf each sequence id owns.
    leaf_of: Vec<Option<NodeId>>,
    /// Tokens in the tree: the KV cells in use.
    cells: usize,
    clock: u64,
}

impl PrefixTree {
    /// A tree for sequence ids `0..sequences`.
    pub fn new(sequences: usize) -> Self {
        let root = Node {
            parent: ROOT,
            children: Vec::new(),
            start: 0,
            tokens: Vec::new(),
            owner: None,
            running: false,
            last_used: 0,
        };
        PrefixTree {
            nodes: vec![Some(root)],
            free_nodes: Vec::new(),
            leaf_of: vec![None; sequences],
            cells: 0,
            clock: 0,
        }
    }

    /// KV cells in use (each computed token once).
    pub fn cells(&self) -> usize {
        self.cells
    }

    /// A sequence id that holds nothing.
    pub fn free_sequence(&self) -> Option<SeqId> {
        self.leaf_of.iter().position(Option::is_none).map(|s| s as SeqId)
    }

    /// Cells no running sequence reads: what cached prefixes alone hold (and what
    /// eviction could free).
    pub fn idle_cells(&self) -> usize {
        let mut in_use = vec![false; self.nodes.len()];
        for (id, n) in self.live() {
            if n.running {
                // Up to the first node another running path already marked.
                let mut node = id;
                while node != ROOT && !in_use[node] {
                    in_use[node] = true;
                    node = self.node(node).parent;
                }
            }
        }
        self.live().filter(|(id, _)| !in_use[*id]).map(|(_, n)| n.tokens.len()).sum()
    }

    /// The tokens a leaf holds beyond its parent (what dropping it frees).
    pub fn own_tokens(&self, leaf: NodeId) -> usize {
        self.node(leaf).tokens.len()
    }

    fn live(&self) -> impl Iterator<Item = (NodeId, &Node)> {
        self.nodes.iter().enumerate().filter_map(|(id, n)| n.as_ref().map(|n| (id, n)))
    }

    fn node(&self, id: NodeId) -> &Node {
        self.nodes[id].as_ref().unwrap_or_else(|| unreachable!("node {id} is gone"))
    }

    fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.nodes[id].as_mut().unwrap_or_else(|| unreachable!("node {id} is gone"))
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn alloc(&mut self, node: Node) -> NodeId {
        let owner = node.owner;
        let id = match self.free_nodes.pop() {
            Some(id) => {
                self.nodes[id] = Some(node);
                id
            }
            None => {
                self.nodes.push(Some(node));
                self.nodes.len() - 1
            }
        };
        if let Some(owner) = owner {
            self.leaf_of[owner as usize] = Some(id);
        }
        id
    }

    /// The longest prefix of `prompt[..limit]` in the tree.
    pub fn find(&self, prompt: &[Token], limit: usize) -> Match {
        let prompt = &prompt[..limit.min(prompt.len())];
        let mut at = Match { node: ROOT, offset: 0, len: 0 };
        loop {
            // Two children may start alike (prefixes computed side by side): take the one
            // that matches longer.
            let best = self
                .node(at.node)
                .children
                .iter()
                .map(|&c| (c, common_prefix(&self.node(c).tokens, &prompt[at.len..])))
                .max_by_key(|&(_, n)| n);
            match best {
                Some((child, n)) if n > 0 => {
                    at = Match { node: child, offset: n, len: at.len + n };
                    if n < self.node(child).tokens.len() {
                        return at;
                    }
                }
                _ => return at,
            }
        }
    }

    /// Marks the path to `m` as just used, so that eviction keeps it longest.
    pub fn touch(&mut self, m: Match) {
        let now = self.tick();
        let mut id = m.node;
        while id != ROOT {
            self.node_mut(id).last_used = now;
            id = self.node(id).parent;
        }
    }

    /// A sequence holding the path to `node` (the owner of a leaf below it).
    fn holder(&self, mut node: NodeId) -> Option<SeqId> {
        loop {
            let n = self.node(node);
            if let Some(owner) = n.owner {
                return Some(owner);
            }
            node = *n.children.first()?;
        }
    }

    /// The idle sequence whose whole path is `m` (the prompt extends what it holds): the
    /// request takes it over instead of copying.
    pub fn idle_owner_at_end(&self, m: Match) -> Option<SeqId> {
        let n = self.node(m.node);
        (m.node != ROOT && !n.running && m.offset == n.tokens.len()).then_some(n.owner).flatten()
    }

    /// Starts running sequence `seq` on the cached prefix `m`: takes over `m`'s idle leaf
    /// when `seq` owns it, else copies the prefix into `seq` (which must hold nothing).
    /// Returns the sequence's leaf and how many prompt tokens it already holds.
    pub fn start(&mut self, seq: SeqId, m: Match, kv: &mut impl KvCells) -> (NodeId, usize) {
        let now = self.tick();
        if self.idle_owner_at_end(m) == Some(seq) {
            let n = self.node_mut(m.node);
            n.running = true;
            n.last_used = now;
            return (m.node, m.len);
        }
        debug_assert!(self.leaf_of[seq as usize].is_none(), "sequence {seq} is in use");
        let mut parent = ROOT;
        let mut reused = 0;
        if m.len > 0 && self.holder(m.node).is_some_and(|src| kv.copy(src, seq, m.len)) {
            parent = self.split(m.node, m.offset);
            reused = m.len;
        }
        let start = self.node(parent).end();
        let leaf = self.alloc(Node {
            parent,
            children: Vec::new(),
            start,
            tokens: Vec::new(),
            owner: Some(seq),
            running: true,
            last_used: now,
        });
        self.node_mut(parent).children.push(leaf);
        (leaf, reused)
    }

    /// Starts running sequence `seq` on `tokens` it already holds (restored from a
    /// snapshot): a new path from the root, beside any cached one that starts alike.
    pub fn adopt(&mut self, seq: SeqId, tokens: &[Token]) -> NodeId {
        debug_assert!(self.leaf_of[seq as usize].is_none(), "sequence {seq} is in use");
        let now = self.tick();
        let leaf = self.alloc(Node {
            parent: ROOT,
            children: Vec::new(),
            start: 0,
            tokens: tokens.to_vec(),
            owner: Some(seq),
            running: true,
            last_used: now,
        });
        self.node_mut(ROOT).children.push(leaf);
        self.cells += tokens.len();
        leaf
    }

    /// Makes the first `offset` tokens of `id` a node of their own, with `id` (keeping its
    /// identity, owner and children) as its child; returns the node ending at `offset`. A
    /// running leaf is split even at its end, so that it goes on growing alone.
    fn split(&mut self, id: NodeId, offset: usize) -> NodeId {
        let n = self.node(id);
        if id == ROOT || (offset == n.tokens.len() && n.owner.is_none()) {
            return id;
        }
        let (parent, start, last_used) = (n.parent, n.start, n.last_used);
        let head: Vec<Token> = self.node_mut(id).tokens.drain(..offset).collect();
        let prefix = self.alloc(Node {
            parent,
            children: vec![id],
            start,
            tokens: head,
            owner: None,
            running: false,
            last_used,
        });
        if let Some(slot) = self.node_mut(parent).children.iter_mut().find(|c| **c == id) {
            *slot = prefix;
        }
        let n = self.node_mut(id);
        n.parent = prefix;
        n.start = start + offset;
        prefix
    }

    /// Records tokens a running sequence just computed (their cells now exist).
    pub fn extend(&mut self, leaf: NodeId, tokens: &[Token]) {
        self.node_mut(leaf).tokens.extend_from_slice(tokens);
        self.cells += tokens.len();
    }

    /// The request of a running leaf ended; its cells stay for later prompts.
    pub fn park(&mut self, leaf: NodeId, kv: &mut impl KvCells) {
        let now = self.tick();
        let n = self.node_mut(leaf);
        n.running = false;
        n.last_used = now;
        if n.tokens.is_empty() {
            // It computed nothing of its own: drop it, its parent holds the same path.
            let _ = self.release(leaf, kv);
        }
    }

    /// Every idle leaf (what the cache holds apart from running requests).
    pub fn idle_leaves(&self) -> Vec<NodeId> {
        self.live().filter(|(id, n)| *id != ROOT && n.owner.is_some() && !n.running).map(|(id, _)| id).collect()
    }

    /// The least recently used idle leaf that is not on the path to `keep`.
    pub fn lru_idle_leaf(&self, keep: Option<Match>) -> Option<NodeId> {
        let pinned = keep.map(|m| self.path(m.node)).unwrap_or_default();
        self.live()
            .filter(|(id, n)| *id != ROOT && n.owner.is_some() && !n.running && !pinned.contains(id))
            .min_by_key(|(_, n)| n.last_used)
            .map(|(id, _)| id)
    }

    fn path(&self, mut id: NodeId) -> Vec<NodeId> {
        let mut path = Vec::new();
        while id != ROOT {
            path.push(id);
            id = self.node(id).parent;
        }
        path
    }

    /// The owner of a leaf and the tokens of its whole path (what a snapshot of the owner
    /// holds).
    pub fn leaf_path(&self, leaf: NodeId) -> (Option<SeqId>, Vec<Token>) {
        let mut tokens = Vec::new();
        for id in self.path(leaf).into_iter().rev() {
            tokens.extend_from_slice(&self.node(id).tokens);
        }
        (self.node(leaf).owner, tokens)
    }

    /// Drops an idle leaf and frees its cells (returns how many). Its owner goes on holding
    /// the parent when that becomes a leaf; else the owner is freed.
    pub fn release(&mut self, leaf: NodeId, kv: &mut impl KvCells) -> usize {
        let Some(Node { parent, start, tokens, owner, .. }) = self.nodes[leaf].take() else { return 0 };
        self.free_nodes.push(leaf);
        self.cells -= tokens.len();
        let freed = tokens.len();
        let Some(owner) = owner else { return freed };
        let p = self.node_mut(parent);
        p.children.retain(|&c| c != leaf);
        if parent != ROOT && p.children.is_empty() {
            kv.remove(owner, start);
            p.owner = Some(owner);
            self.leaf_of[owner as usize] = Some(parent);
            return freed;
        }
        let merge = parent != ROOT && p.children.len() == 1;
        kv.remove(owner, 0);
        self.leaf_of[owner as usize] = None;
        if merge {
            self.merge_into_child(parent);
        }
        freed
    }

    /// Folds a node with one child and no owner into that child (radix compaction); the
    /// child keeps its identity.
    fn merge_into_child(&mut self, id: NodeId) {
        let Some(Node { parent, children, start, mut tokens, last_used, .. }) = self.nodes[id].take() else { return };
        self.free_nodes.push(id);
        let child = children[0];
        let c = self.node_mut(child);
        tokens.append(&mut c.tokens);
        c.tokens = tokens;
        c.start = start;
        c.parent = parent;
        c.last_used = c.last_used.max(last_used);
        if let Some(slot) = self.node_mut(parent).children.iter_mut().find(|x| **x == id) {
            *slot = child;
        }
    }

    /// Forgets everything (the context was cleared).
    pub fn clear(&mut self) {
        *self = PrefixTree { clock: self.clock, ..PrefixTree::new(self.leaf_of.len()) };
    }

    /// Checks the invariants; tests call it after every step.
    #[cfg(test)]
    pub fn check(&self) {
        let mut cells = 0;
        for (id, n) in self.live() {
            cells += n.tokens.len();
            if id == ROOT {
                assert!(n.owner.is_none());
                continue;
            }
            assert_eq!(n.owner.is_some(), n.children.is_empty(), "owners are exactly on leaves: {id} {n:?}");
            assert_eq!(n.start, self.node(n.parent).end(), "node {id} starts where its parent ends");
            assert!(self.node(n.parent).children.contains(&id));
            if n.owner.is_none() {
                assert!(n.children.len() >= 2, "node {id} has one child and no owner: it should have merged");
            }
            if let Some(owner) = n.owner {
                assert_eq!(self.leaf_of[owner as usize], Some(id), "leaf_of[{owner}]");
            }
        }
        for (seq, leaf) in self.leaf_of.iter().enumerate() {
            if let Some(leaf) = leaf {
                assert_eq!(self.node(*leaf).owner, Some(seq as SeqId));
            }
        }
        assert_eq!(cells, self.cells);
    }
}

pub fn common_prefix(a: &[Token], b: &[Token]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}
