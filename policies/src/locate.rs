//! Maps field paths to their line and column in a YAML text, so errors found
//! after parsing (unknown tools, codes, backends) still point at the spot.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use crate::error::{FieldPath, Location, Segment};

/// Positions of every mapping key and sequence item in one YAML text.
#[derive(Debug, Default)]
pub struct Positions {
    marks: HashMap<FieldPath, (Location, usize)>,
    scalars: HashMap<FieldPath, String>,
}

impl Positions {
    /// Indexes `text`; a text that does not parse yields an empty index (the
    /// serde pass reports the syntax error itself).
    pub fn index(text: &str) -> Self {
        let mut walker = Walker::default();
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut walker, false).is_err() {
            return Self::default();
        }
        Self {
            marks: walker.marks,
            scalars: walker.scalars,
        }
    }

    /// The path of the item of sequence `seq` whose text is `value` (sets
    /// such as `allowed_tools` lose the written order when parsed), or `seq`
    /// itself when there is none.
    pub fn item(&self, seq: &FieldPath, value: &str) -> FieldPath {
        (0..)
            .map(|i| seq.index(i))
            .take_while(|p| self.marks.contains_key(p))
            .find(|p| self.scalars.get(p).is_some_and(|s| s == value))
            .unwrap_or_else(|| seq.clone())
    }

    /// Where `path` is written, or failing that its nearest written ancestor.
    pub fn locate(&self, path: &FieldPath) -> Option<Location> {
        let mut p = path.clone();
        loop {
            if let Some((loc, _)) = self.marks.get(&p) {
                return Some(*loc);
            }
            if p.is_root() {
                return None;
            }
            p = p.parent();
        }
    }
}

/// What a container on the walk stack is waiting for.
#[derive(Debug)]
enum Frame {
    /// In a mapping: the next node is a key when `key_next`.
    Map { key_next: bool },
    /// In a sequence: the next node is item `next`.
    Seq { next: usize },
}

#[derive(Debug, Default)]
struct Walker {
    frames: Vec<Frame>,
    path: Vec<Segment>,
    marks: HashMap<FieldPath, (Location, usize)>,
    scalars: HashMap<FieldPath, String>,
}

fn location(mark: Marker) -> Location {
    // yaml-rust2 counts lines from 1 and columns from 0.
    Location {
        line: mark.line(),
        column: mark.col() + 1,
    }
}

impl Walker {
    fn record(&mut self, mark: Marker) {
        self.marks
            .entry(FieldPath(self.path.clone()))
            .or_insert_with(|| (location(mark), mark.index()));
    }

    /// Called at the start of every node; true when the node is a mapping key.
    fn begin(&mut self, mark: Marker) -> bool {
        match self.frames.last_mut() {
            Some(Frame::Map { key_next: true }) => true,
            Some(Frame::Map { key_next: false }) | None => false,
            Some(Frame::Seq { next }) => {
                let i = *next;
                self.path.push(Segment::Index(i));
                self.record(mark);
                false
            }
        }
    }

    /// Called when a value node is complete.
    fn end_value(&mut self) {
        match self.frames.last_mut() {
            Some(Frame::Map { key_next }) => {
                *key_next = true;
                self.path.pop();
            }
            Some(Frame::Seq { next }) => {
                *next += 1;
                self.path.pop();
            }
            None => {}
        }
    }

    /// A key has been read: the next node is its value.
    fn got_key(&mut self, key: String, mark: Marker) {
        self.path.push(Segment::Key(key));
        self.record(mark);
        // A block mapping's start is reported at its first `:`, after its
        // first key; move enclosing items back to where their text starts.
        for n in 0..self.path.len() {
            if let Some(entry) = self.marks.get_mut(&FieldPath(self.path[..n].to_vec())) {
                if entry.1 > mark.index() {
                    *entry = (location(mark), mark.index());
                }
            }
        }
        if let Some(Frame::Map { key_next }) = self.frames.last_mut() {
            *key_next = false;
        }
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(value, ..) => {
                if self.begin(mark) {
                    self.got_key(value, mark);
                } else {
                    self.scalars.insert(FieldPath(self.path.clone()), value);
                    self.end_value();
                }
            }
            Event::Alias(_) => {
                if self.begin(mark) {
                    self.got_key("?".to_owned(), mark);
                } else {
                    self.end_value();
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                if self.begin(mark) {
                    // A complex (non-scalar) key: serde rejects it anyway;
                    // keep the walk consistent by naming it `?`.
                    self.got_key("?".to_owned(), mark);
                }
                self.frames.push(if matches!(ev, Event::MappingStart(..)) {
                    Frame::Map { key_next: true }
                } else {
                    Frame::Seq { next: 0 }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.frames.pop();
                self.end_value();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(p: &Positions, path: FieldPath) -> (usize, usize) {
        let l = p.locate(&path).unwrap();
        (l.line, l.column)
    }

    #[test]
    fn finds_keys_and_items() {
        let text = "id: a\nrules:\n  - id: r1\n    match: {regex: 'x'}\n  - id: r2\nallowed_tools: [x, y]\n";
        let p = Positions::index(text);
        let root = FieldPath::root();
        assert_eq!(at(&p, root.key("id")), (1, 1));
        assert_eq!(at(&p, root.key("rules").index(1).key("id")), (5, 5));
        assert_eq!(
            at(&p, root.key("rules").index(0).key("match").key("regex")),
            (4, 13)
        );
        assert_eq!(at(&p, root.key("allowed_tools").index(1)), (6, 20));
        // A path that is not written falls back to its nearest ancestor.
        assert_eq!(at(&p, root.key("rules").index(1).key("category")), (5, 5));
        assert!(p.locate(&root).is_none());
        assert_eq!(
            p.item(&root.key("allowed_tools"), "y"),
            root.key("allowed_tools").index(1)
        );
        assert_eq!(
            p.item(&root.key("allowed_tools"), "z"),
            root.key("allowed_tools")
        );
    }
}
