//! Field positions: for one YAML document, the 1-based file line of every field path
//! (`spec.http[0].route[1].weight`), built from `saphyr-parser` events. Findings use it
//! to point at the offending field instead of the start of the resource.
//!
//! Path syntax (shared with the loader and the validator): map keys are joined with `.`,
//! sequence items are `[i]`, and the root has the empty path. A key that itself contains
//! dots (`app.kubernetes.io/name`) is written as it is; [`Positions::line_of`] falls back
//! to the nearest recorded parent, so such paths still resolve to a sensible line.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, Span};

/// Field path -> 1-based line in the file. Built once per document; cheap to share
/// behind an `Arc`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Positions {
    lines: HashMap<String, u32>,
    duplicates: Vec<(String, u32)>,
}

impl Positions {
    /// No positions at all: every lookup is `None`.
    pub fn empty() -> Self {
        Positions::default()
    }

    /// Index one YAML document. `first_line` is the file line of the document's first
    /// line, so the index holds file lines. Best effort: on a YAML syntax error the
    /// fields seen so far are kept.
    pub fn from_yaml(text: &str, first_line: u32) -> Self {
        let mut builder = Builder {
            out: Positions::default(),
            offset: first_line.saturating_sub(1),
            stack: Vec::new(),
        };
        for event in Parser::new_from_str(text) {
            let Ok((event, span)) = event else { break };
            if !builder.event(event, span) {
                break;
            }
        }
        builder.out
    }

    /// Record a line for a path (the first record wins).
    pub fn insert(&mut self, path: impl Into<String>, line: u32) {
        self.lines.entry(path.into()).or_insert(line);
    }

    /// The line of `path`, or of its nearest recorded parent (`a.b[2].c` -> `a.b[2]`
    /// -> `a.b` -> `a`). `None` when nothing on the way is known.
    pub fn line_of(&self, path: &str) -> Option<u32> {
        let mut p = path;
        loop {
            if let Some(l) = self.lines.get(p) {
                return Some(*l);
            }
            p = parent_path(p)?;
        }
    }

    /// The line of exactly this path, without falling back to a parent.
    pub fn exact(&self, path: &str) -> Option<u32> {
        self.lines.get(path).copied()
    }

    /// Keys written twice in the same mapping (path, line of the second one). YAML
    /// loaders keep the last value, which usually hides a mistake.
    pub fn duplicates(&self) -> &[(String, u32)] {
        &self.duplicates
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

/// The parent of a field path: `a.b[2]` -> `a.b`, `a.b` -> `a`, `a` -> `` (root),
/// `` -> `None`.
pub fn parent_path(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    if path.ends_with(']') {
        if let Some(i) = path.rfind('[') {
            return Some(&path[..i]);
        }
    }
    Some(path.rfind('.').map_or("", |i| &path[..i]))
}

/// `parent.key`, or `key` at the root.
pub fn join_key(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// `parent[index]`.
pub fn join_index(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

/// Deeper nesting than this is not indexed (the YAML loader refuses such documents anyway).
const MAX_DEPTH: usize = 256;

enum Frame {
    /// A mapping at `path`; `key` is the path of the entry whose value comes next, or
    /// `None` while a key is expected.
    Map {
        path: String,
        key: Option<Option<String>>,
    },
    Seq {
        path: String,
        next: usize,
    },
    /// A node whose path is unknown (complex keys, children of unknown nodes): its
    /// nesting depth, to find where it ends, and whether it is a mapping key.
    Skip {
        depth: usize,
        is_key: bool,
    },
}

struct Builder {
    out: Positions,
    offset: u32,
    stack: Vec<Frame>,
}

impl Builder {
    fn line(&self, span: Span) -> u32 {
        let l = u32::try_from(span.start.line()).unwrap_or(u32::MAX);
        l.saturating_add(self.offset)
    }

    /// Handle one event; `false` stops indexing.
    fn event(&mut self, event: Event<'_>, span: Span) -> bool {
        let line = self.line(span);
        match event {
            Event::Scalar(value, ..) => self.node(line, Some(&value), None),
            Event::Alias(_) => self.node(line, None, None),
            Event::MappingStart(..) => self.node(line, None, Some(true)),
            Event::SequenceStart(..) => self.node(line, None, Some(false)),
            Event::MappingEnd | Event::SequenceEnd => {
                match self.stack.last_mut() {
                    Some(Frame::Skip { depth, .. }) if *depth > 1 => *depth -= 1,
                    Some(Frame::Skip { is_key: true, .. }) => {
                        // A complex key ended: its map now expects the value.
                        self.stack.pop();
                    }
                    Some(_) => {
                        self.stack.pop();
                        self.value_done();
                    }
                    None => {}
                }
                true
            }
            Event::DocumentEnd | Event::StreamEnd => false,
            Event::Nothing | Event::StreamStart | Event::DocumentStart(_) => true,
        }
    }

    /// The current map (if any) has received a whole value: it expects a key again.
    fn value_done(&mut self) {
        if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
            *key = None;
        }
    }

    /// A node starts: a scalar (`scalar` is its text), an alias, or a container
    /// (`container` is `Some(is_map)`).
    fn node(&mut self, line: u32, scalar: Option<&str>, container: Option<bool>) -> bool {
        if self.stack.len() > MAX_DEPTH {
            return false;
        }
        // Path of this node, `None` when it cannot be named.
        let path: Option<String> = match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Skip { depth, .. }) => {
                if container.is_some() {
                    *depth += 1;
                }
                return true;
            }
            Some(Frame::Seq { path, next }) => {
                let p = join_index(path, *next);
                *next += 1;
                self.out.insert(p.clone(), line);
                Some(p)
            }
            Some(Frame::Map { path, key }) => match key.take() {
                // This node is a key.
                None => {
                    let entry = scalar.map(|k| join_key(path, k));
                    if let Some(p) = &entry {
                        if self.out.lines.contains_key(p) {
                            self.out.duplicates.push((p.clone(), line));
                        } else {
                            self.out.lines.insert(p.clone(), line);
                        }
                    }
                    *key = Some(entry);
                    if container.is_some() {
                        self.stack.push(Frame::Skip {
                            depth: 1,
                            is_key: true,
                        });
                    }
                    return true;
                }
                // This node is the value of `k`.
                Some(k) => k,
            },
        };
        match (container, path) {
            (Some(true), Some(path)) => self.stack.push(Frame::Map { path, key: None }),
            (Some(false), Some(path)) => self.stack.push(Frame::Seq { path, next: 0 }),
            (Some(_), None) => self.stack.push(Frame::Skip {
                depth: 1,
                is_key: false,
            }),
            (None, _) => self.value_done(),
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
apiVersion: v1
kind: VirtualService
spec:
  hosts:
  - reviews
  http:
  - match:
    - uri:
        prefix: /a
    route:
    - destination:
        host: reviews
      weight: 10
    - destination: {host: r2}
      weight: 90
";

    #[test]
    fn indexes_keys_and_items() {
        let p = Positions::from_yaml(DOC, 1);
        assert_eq!(p.exact("kind"), Some(2));
        assert_eq!(p.exact("spec.hosts[0]"), Some(5));
        assert_eq!(p.exact("spec.http[0]"), Some(7));
        assert_eq!(p.exact("spec.http[0].match[0].uri.prefix"), Some(9));
        assert_eq!(p.exact("spec.http[0].route[0].weight"), Some(13));
        assert_eq!(p.exact("spec.http[0].route[1].destination.host"), Some(14));
        assert_eq!(p.exact("spec.http[0].route[1].weight"), Some(15));
    }

    #[test]
    fn offset_and_parent_fallback() {
        let p = Positions::from_yaml(DOC, 11);
        assert_eq!(p.line_of("spec.http[0].route[1].weight"), Some(25));
        assert_eq!(p.line_of("spec.http[0].route[1].nope.deeper"), Some(24));
        assert_eq!(p.line_of("metadata.name"), None);
    }

    #[test]
    fn parents() {
        assert_eq!(parent_path("a.b[2].c"), Some("a.b[2]"));
        assert_eq!(parent_path("a.b[2]"), Some("a.b"));
        assert_eq!(parent_path("a"), Some(""));
        assert_eq!(parent_path(""), None);
    }

    #[test]
    fn complex_keys_and_duplicates() {
        let text = "a:\n  ? [x, y]\n  : 1\n  b: 2\n  b: 3\nc: *anchor\n";
        let p = Positions::from_yaml(text, 1);
        assert_eq!(p.exact("a.b"), Some(4));
        assert_eq!(p.duplicates(), &[("a.b".to_string(), 5)]);
    }

    #[test]
    fn broken_yaml_keeps_what_was_seen() {
        let p = Positions::from_yaml("a: 1\nb:\n  c: [1,\n", 1);
        assert_eq!(p.exact("a"), Some(1));
        assert_eq!(p.exact("b.c"), Some(3));
    }
}
