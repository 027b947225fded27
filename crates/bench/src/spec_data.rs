//! The texts of the `spec` suite: code to rewrite, documents to quote, conversations to
//! revisit, and story prompts. Several of each, so that every measured request is the
//! first of its kind (a server that remembers earlier answers gains nothing from them).

/// (code, the rename asked for).
pub const CODE: [(&str, &str); 4] = [
    (
        r#"use std::collections::HashMap;

/// A simple in-memory key-value store with expiry.
pub struct Store {
    entries: HashMap<String, Entry>,
    clock: u64,
}

struct Entry {
    value: String,
    expires_at: Option<u64>,
}

impl Store {
    pub fn new() -> Self {
        Store { entries: HashMap::new(), clock: 0 }
    }

    pub fn tick(&mut self, seconds: u64) {
        self.clock += seconds;
        let now = self.clock;
        self.entries.retain(|_, e| e.expires_at.map_or(true, |t| t > now));
    }

    pub fn set(&mut self, key: &str, value: &str, ttl: Option<u64>) {
        let expires_at = ttl.map(|t| self.clock + t);
        self.entries.insert(key.to_string(), Entry { value: value.to_string(), expires_at });
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        let entry = self.entries.get(key)?;
        match entry.expires_at {
            Some(t) if t <= self.clock => None,
            _ => Some(entry.value.as_str()),
        }
    }

    pub fn remove(&mut self, key: &str) -> bool {
        self.entries.remove(key).is_some()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
}
"#,
        "the struct `Store` to `Cache`",
    ),
    (
        r#"import json
from dataclasses import dataclass, field


@dataclass
class Item:
    sku: str
    name: str
    price_cents: int
    quantity: int = 0


@dataclass
class Inventory:
    items: dict = field(default_factory=dict)

    def add_item(self, item):
        if item.sku in self.items:
            raise ValueError(f"duplicate sku {item.sku}")
        self.items[item.sku] = item

    def restock(self, sku, count):
        if count <= 0:
            raise ValueError("count must be positive")
        self.items[sku].quantity += count

    def sell(self, sku, count):
        item = self.items[sku]
        if item.quantity < count:
            raise ValueError(f"only {item.quantity} of {item.name} left")
        item.quantity -= count
        return item.price_cents * count

    def total_value_cents(self):
        return sum(i.price_cents * i.quantity for i in self.items.values())

    def to_json(self):
        return json.dumps({sku: vars(i) for sku, i in self.items.items()}, indent=2)

    def low_stock(self, threshold=5):
        return [i.name for i in self.items.values() if i.quantity < threshold]
"#,
        "the method `restock` to `replenish`",
    ),
    (
        r#"function parseDuration(text) {
  const units = { ms: 1, s: 1000, m: 60000, h: 3600000 };
  const match = /^(\d+)(ms|s|m|h)$/.exec(text.trim());
  if (!match) {
    throw new Error(`invalid duration: ${text}`);
  }
  return Number(match[1]) * units[match[2]];
}

class RetryPolicy {
  constructor(attempts, baseDelay, maxDelay) {
    this.attempts = attempts;
    this.baseDelay = parseDuration(baseDelay);
    this.maxDelay = parseDuration(maxDelay);
  }

  delayFor(attempt) {
    const exponential = this.baseDelay * 2 ** attempt;
    const jitter = Math.random() * this.baseDelay;
    return Math.min(this.maxDelay, exponential + jitter);
  }

  async run(task) {
    let lastError;
    for (let attempt = 0; attempt < this.attempts; attempt++) {
      try {
        return await task(attempt);
      } catch (error) {
        lastError = error;
        const delay = this.delayFor(attempt);
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
    throw lastError;
  }
}

module.exports = { parseDuration, RetryPolicy };
"#,
        "the function `parseDuration` to `durationToMillis`",
    ),
    (
        r#"package queue

import (
	"errors"
	"sync"
)

// ErrEmpty is returned when the queue holds nothing.
var ErrEmpty = errors.New("queue is empty")

// Bounded is a fixed-size FIFO queue safe for concurrent use.
type Bounded struct {
	mu    sync.Mutex
	items []int
	head  int
	size  int
}

// NewBounded makes a queue holding at most capacity items.
func NewBounded(capacity int) *Bounded {
	return &Bounded{items: make([]int, capacity)}
}

// Push adds an item; it returns false when the queue is full.
func (q *Bounded) Push(v int) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.size == len(q.items) {
		return false
	}
	q.items[(q.head+q.size)%len(q.items)] = v
	q.size++
	return true
}

// Pop removes the oldest item.
func (q *Bounded) Pop() (int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.size == 0 {
		return 0, ErrEmpty
	}
	v := q.items[q.head]
	q.head = (q.head + 1) % len(q.items)
	q.size--
	return v, nil
}
"#,
        "the type `Bounded` to `Ring`",
    ),
];

/// (document, what to quote).
pub const DOCUMENTS: [(&str, &str); 4] = [
    (
        "The Lighthouse Service Handbook\n\n\
         Section 1. Daily duties. The keeper lights the lamp thirty minutes before sunset and extinguishes it thirty minutes after sunrise. The lens must be cleaned every morning with a soft cloth and a solution of alcohol and water, never with abrasive powder, which scratches the prisms and weakens the beam.\n\n\
         Section 2. Fuel and records. Fuel deliveries are logged on arrival with the date, the volume received and the name of the carrier. The keeper measures the tank level at noon each day and records it in the fuel book; a difference of more than two percent between the book and the measured level must be reported to the district office within forty-eight hours.\n\n\
         Section 3. Fog signals. When visibility falls below two nautical miles, the keeper starts the fog signal and sounds it at intervals of thirty seconds until visibility returns. Each period of fog is entered in the log with the time it began, the time it ended, and the number of vessels heard or seen.\n\n\
         Section 4. Storms. Before a storm the keeper secures the gallery doors, checks the lightning conductor, and moves the spare lamps to the lower store room. During the storm nobody climbs to the gallery unless the lamp has failed.",
        "the section about fuel and records",
    ),
    (
        "Orchard Cooperative: Member Guide\n\n\
         Joining. New members pay a single entry fee of forty euros and buy at least five shares at twenty euros each. Shares are refunded at their purchase price when a member leaves, after the annual accounts are approved.\n\n\
         Harvest work. Every member works at least three half-days during the apple harvest, from the first of September to the middle of October. Members who cannot work may pay a replacement fee of thirty euros per half-day, which funds seasonal pickers.\n\n\
         Sales. Fruit is sold at the Saturday market and to two local schools. Members receive a share of the yearly profit in proportion to the shares they hold, paid in January by bank transfer.\n\n\
         Meetings. The general meeting takes place in March. Each member has one vote, whatever the number of shares held, and decisions need a majority of the votes cast.",
        "the paragraph about harvest work",
    ),
    (
        "Bicycle Workshop Safety Rules\n\n\
         Tools. Return every tool to the wall board after use. Damaged tools go in the red box and are never put back on the board. Torque wrenches are stored at their lowest setting so that their springs do not weaken.\n\n\
         Stands. A bicycle is clamped by the seat post, never by the frame tubes, which are thin and dent easily. Carbon frames are clamped with the rubber inserts, and only by trained volunteers.\n\n\
         Chemicals. Degreaser and chain oil are kept in the metal cabinet by the door. Rags soaked with solvent go in the closed bin, which is emptied every evening, because oily rags can catch fire on their own as they dry.\n\n\
         Visitors. Children under twelve stay with an adult at all times. Everyone wears closed shoes in the workshop.",
        "the rules about chemicals",
    ),
    (
        "Community Library: Lending Policy\n\n\
         Loans. Members borrow up to eight items at once for three weeks. Each loan can be renewed twice, online or at the desk, unless another member has reserved the item.\n\n\
         Late returns. There are no fines. A member with an item more than four weeks late cannot borrow until it is returned; lost items are replaced at the price shown in the catalogue.\n\n\
         Reservations. Members reserve up to five items. A reserved item is kept at the desk for seven days after the member is notified, then passed to the next person in the queue.\n\n\
         Special collections. Maps, local archives and rare books are read in the reading room only. They are brought from the stacks by staff on request.",
        "the paragraph about reservations",
    ),
];

/// (a question, the assistant's earlier answer, the follow-up that revisits it).
pub const CONVERSATIONS: [(&str, &str, &str); 4] = [
    (
        "Write a Rust function that checks whether a string is a palindrome, ignoring case and spaces.",
        "Here is a function that does that:\n\n```rust\nfn is_palindrome(text: &str) -> bool {\n    let letters: Vec<char> = text\n        .chars()\n        .filter(|c| !c.is_whitespace())\n        .map(|c| c.to_ascii_lowercase())\n        .collect();\n    let n = letters.len();\n    (0..n / 2).all(|i| letters[i] == letters[n - 1 - i])\n}\n\nfn main() {\n    for word in [\"Never odd or even\", \"Rust\", \"A man a plan a canal Panama\"] {\n        println!(\"{word}: {}\", is_palindrome(word));\n    }\n}\n```\n\nIt keeps the letters, lowercases them, and compares the first half with the mirrored second half.",
        "Repeat that code exactly, but rename the function to `reads_the_same_backwards`.",
    ),
    (
        "Write a Python function that counts the words in a text file.",
        "Here is one way:\n\n```python\nfrom collections import Counter\n\n\ndef count_words(path):\n    counts = Counter()\n    with open(path, encoding=\"utf-8\") as f:\n        for line in f:\n            for word in line.lower().split():\n                word = word.strip(\".,;:!?\\\"'()\")\n                if word:\n                    counts[word] += 1\n    return counts\n\n\nif __name__ == \"__main__\":\n    import sys\n    for word, n in count_words(sys.argv[1]).most_common(10):\n        print(f\"{n:6} {word}\")\n```\n\nIt lowercases each line, strips punctuation from the ends of words, and counts them.",
        "Show the same code again, unchanged, but with the parameter `path` renamed to `filename`.",
    ),
    (
        "Write a SQL query listing the five customers who spent the most last year.",
        "Assuming tables `customers(id, name)` and `orders(id, customer_id, total, created_at)`:\n\n```sql\nSELECT c.id,\n       c.name,\n       SUM(o.total) AS spent\nFROM customers AS c\nJOIN orders AS o ON o.customer_id = c.id\nWHERE o.created_at >= DATE '2025-01-01'\n  AND o.created_at < DATE '2026-01-01'\nGROUP BY c.id, c.name\nORDER BY spent DESC\nLIMIT 5;\n```\n\nThe join keeps each customer's orders, the date range selects last year, and the sum ranks them.",
        "Write that query again exactly, but alias `orders` as `ord` instead of `o`.",
    ),
    (
        "Write a shell script that backs up a directory into a dated tar archive.",
        "Here is a small script:\n\n```sh\n#!/usr/bin/env sh\nset -eu\n\nsource_dir=\"${1:?usage: backup.sh DIR [DEST]}\"\ndest_dir=\"${2:-$HOME/backups}\"\nstamp=\"$(date +%Y-%m-%d_%H%M%S)\"\nname=\"$(basename \"$source_dir\")\"\n\nmkdir -p \"$dest_dir\"\ntar -czf \"$dest_dir/$name-$stamp.tar.gz\" -C \"$(dirname \"$source_dir\")\" \"$name\"\necho \"saved $dest_dir/$name-$stamp.tar.gz\"\n```\n\nIt names the archive after the directory and the time, and creates the destination if needed.",
        "Repeat the script exactly, but call the variable `stamp` `timestamp` instead.",
    ),
];

/// Open-ended: nothing in the prompt to copy.
pub const STORIES: [&str; 4] = [
    "Write a new short story about a lighthouse keeper who finds a message in a bottle.",
    "Write a new short story about a robot learning to bake bread.",
    "Write a new short story about two rival gardeners in a small village.",
    "Write a new short story about a cartographer who maps a city that keeps changing.",
];
