//! Key paths (`routes[1].upstream`, `upstreams.app.servers[0]`) and the file behind them:
//! `Spans` maps each path written in the text to its line and column, `Gaps` records the paths
//! that were written but did not parse, so checks that depend on them stay quiet.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A line and column in the file, both counted from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// Where one node was written: its key (absent for list items and the document) and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    key: Option<Pos>,
    value: Pos,
    collection: bool,
}

/// Line and column of every key path written in one YAML document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spans {
    by_path: HashMap<String, Span>,
}

impl Spans {
    /// Walks the text's first document. Never fails: text the walker cannot read (which the
    /// parse reports on its own) only leaves fewer paths with a position.
    pub fn of(text: &str) -> Spans {
        let mut walker = Walker::default();
        let _ = Parser::new_from_str(text).load(&mut walker, false);
        Spans {
            by_path: walker.spans,
        }
    }

    /// Where a problem with `path` should point: a scalar's value, a section's or list's key,
    /// a list item's first key. A path that was not written (a default) takes the position of
    /// its nearest written ancestor.
    pub fn at(&self, path: &str) -> Option<Pos> {
        ancestors(path).find_map(|p| {
            let span = self.by_path.get(p)?;
            Some(match (span.collection, span.key) {
                (true, Some(key)) => key,
                _ => span.value,
            })
        })
    }

    /// Where the key of `path` was written (for unknown keys); its value's position for list
    /// items, which have no key.
    pub fn key(&self, path: &str) -> Option<Pos> {
        let span = self.by_path.get(path)?;
        Some(span.key.unwrap_or(span.value))
    }
}

/// `path`, then each ancestor up to (not including) the document: `a.b[1].c`, `a.b[1]`, `a.b`, `a`.
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    let mut next = (!path.is_empty()).then_some(path);
    std::iter::from_fn(move || {
        let cur = next?;
        next = cur
            .rfind(['.', '['])
            .map(|i| &cur[..i])
            .filter(|p| !p.is_empty());
        Some(cur)
    })
}

/// The path of `key` inside the mapping at `parent`.
pub fn child_key(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// The path of item `index` of the list at `parent`.
pub fn child_index(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

/// Whether `path` is `ancestor` or lies inside it (the empty path is the whole document).
pub fn within(path: &str, ancestor: &str) -> bool {
    ancestor.is_empty()
        || path
            .strip_prefix(ancestor)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// Key paths that were written but did not parse (dropped from the typed configuration).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gaps(BTreeSet<String>);

impl Gaps {
    pub fn add(&mut self, path: impl Into<String>) {
        self.0.insert(path.into());
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `path` lies in a part that did not parse: its value is a default, not the file's.
    pub fn covers(&self, path: &str) -> bool {
        self.0.iter().any(|gap| within(path, gap))
    }

    /// Whether some part of the node at `path` did not parse, so a judgement of the whole node
    /// would be about a node the user did not write.
    pub fn touches(&self, path: &str) -> bool {
        self.0.iter().any(|gap| within(gap, path))
    }
}

/// Where the walker is inside the document.
#[derive(Debug)]
enum Frame {
    /// A mapping and the key whose value comes next, if one was read.
    Map {
        path: String,
        key: Option<(String, Pos)>,
        fresh: bool,
    },
    /// A list and the index of its next item.
    Seq { path: String, next: usize },
    /// A mapping or list used as a key: nothing inside it has a path.
    Opaque { at: Pos },
}

/// What the next node is to its parent.
enum Slot {
    Key,
    Value { path: String, key: Option<Pos> },
    Ignored,
}

#[derive(Default)]
struct Walker {
    spans: HashMap<String, Span>,
    stack: Vec<Frame>,
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        // yaml-rust2 counts lines from 1 and columns from 0.
        let pos = Pos {
            line: mark.line(),
            col: mark.col() + 1,
        };
        match ev {
            Event::Scalar(text, ..) => self.scalar(text, pos),
            Event::Alias(_) => self.scalar("*".to_string(), pos),
            Event::MappingStart(..) => self.open(true, pos),
            Event::SequenceStart(..) => self.open(false, pos),
            Event::MappingEnd | Event::SequenceEnd => self.close(),
            _ => {}
        }
    }
}

impl Walker {
    fn slot(&mut self) -> Slot {
        match self.stack.last_mut() {
            None => Slot::Value {
                path: String::new(),
                key: None,
            },
            Some(Frame::Map { path, key, .. }) => match key.take() {
                Some((k, at)) => Slot::Value {
                    path: child_key(path, &k),
                    key: Some(at),
                },
                None => Slot::Key,
            },
            Some(Frame::Seq { path, next }) => {
                *next += 1;
                Slot::Value {
                    path: child_index(path, *next - 1),
                    key: None,
                }
            }
            Some(Frame::Opaque { .. }) => Slot::Ignored,
        }
    }

    fn scalar(&mut self, text: String, pos: Pos) {
        match self.slot() {
            Slot::Key => self.read_key(text, pos),
            Slot::Value { path, key } => self.record(path, key, pos, false),
            Slot::Ignored => {}
        }
    }

    /// A block mapping's own mark falls after its first key: a mapping with no key of its own
    /// (a list item) is placed at its first key instead.
    fn read_key(&mut self, text: String, pos: Pos) {
        if let Some(Frame::Map { path, key, fresh }) = self.stack.last_mut() {
            if std::mem::take(fresh) {
                if let Some(span) = self.spans.get_mut(path.as_str()) {
                    span.value = pos;
                }
            }
            *key = Some((text, pos));
        }
    }

    fn open(&mut self, mapping: bool, pos: Pos) {
        let frame = match self.slot() {
            Slot::Key | Slot::Ignored => Frame::Opaque { at: pos },
            Slot::Value { path, key } => {
                self.record(path.clone(), key, pos, true);
                match mapping {
                    true => Frame::Map {
                        path,
                        key: None,
                        fresh: true,
                    },
                    false => Frame::Seq { path, next: 0 },
                }
            }
        };
        self.stack.push(frame);
    }

    fn close(&mut self) {
        // A mapping or list that was a key: its parent now has a key with no name.
        if let Some(Frame::Opaque { at }) = self.stack.pop() {
            if let Some(Frame::Map {
                key: key @ None, ..
            }) = self.stack.last_mut()
            {
                *key = Some(("?".to_string(), at));
            }
        }
    }

    fn record(&mut self, path: String, key: Option<Pos>, value: Pos, collection: bool) {
        if !path.is_empty() {
            self.spans.entry(path).or_insert(Span {
                key,
                value,
                collection,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
listen:
  http: \"127.0.0.1:80\"
upstreams:
  app:
    servers: [127.0.0.1:9000, { addr: 10.0.0.1:80, weight: 2 }]
routes:
  - path: /
    upstream: app
  - host: x.example.com
    headers:
      X-Env: prod
";

    fn pos(line: usize, col: usize) -> Option<Pos> {
        Some(Pos { line, col })
    }

    #[test]
    fn scalars_point_at_their_value() {
        let s = Spans::of(DOC);
        assert_eq!(s.at("listen.http"), pos(2, 9));
        assert_eq!(s.at("routes[0].upstream"), pos(8, 15));
        assert_eq!(s.at("routes[1].headers.X-Env"), pos(11, 14));
    }

    #[test]
    fn flow_items_have_their_own_column() {
        let s = Spans::of(DOC);
        assert_eq!(s.at("upstreams.app.servers[0]"), pos(5, 15));
        assert_eq!(s.at("upstreams.app.servers[1].weight"), pos(5, 60));
    }

    #[test]
    fn sections_point_at_their_key_and_items_at_their_first_key() {
        let s = Spans::of(DOC);
        assert_eq!(s.at("upstreams"), pos(3, 1));
        assert_eq!(s.at("upstreams.app.servers"), pos(5, 5));
        assert_eq!(s.at("routes[1]"), pos(9, 5));
        assert_eq!(s.key("routes[0].upstream"), pos(8, 5));
    }

    #[test]
    fn unwritten_paths_take_their_nearest_written_ancestor() {
        let s = Spans::of(DOC);
        assert_eq!(s.at("routes[0].max_body"), s.at("routes[0]"));
        assert_eq!(s.at("routes[1].headers.Other"), s.at("routes[1].headers"));
        assert_eq!(s.at("server.threads"), None);
        assert_eq!(s.key("routes[0].max_body"), None);
    }

    #[test]
    fn broken_text_keeps_what_came_before_the_break() {
        let s = Spans::of("listen:\n  http: x\nroutes:\n  - path: /\n   bad: indent\n");
        assert_eq!(s.at("listen.http"), pos(2, 9));
        assert_eq!(s.at("routes[0].path"), pos(4, 11));
    }

    #[test]
    fn complex_keys_do_not_shift_the_paths_after_them() {
        let s = Spans::of("a:\n  ? [x, y]\n  : 1\n  b: 2\n");
        assert_eq!(s.at("a.b"), pos(4, 6));
    }

    #[test]
    fn path_relations() {
        assert!(within("routes[1].upstream", "routes[1]"));
        assert!(within("routes[1]", "routes"));
        assert!(within("anything", ""));
        assert!(!within("routes[10]", "routes[1]"));
        assert!(!within("listener", "listen"));
        let mut gaps = Gaps::default();
        gaps.add("routes[2].max_body");
        assert!(gaps.covers("routes[2].max_body"));
        assert!(!gaps.covers("routes[2]"));
        assert!(gaps.touches("routes[2]"));
        assert!(!gaps.touches("routes[1]"));
    }
}
