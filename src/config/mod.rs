//! `proxy.yaml`: its serde model, loading (env substitution, parse) and semantic validation.
//! Everything a user can get wrong in the file is reported from here, all problems at once.

mod load;
pub mod model;
pub mod spans;
mod validate;
mod values;

use std::fmt;
use std::path::{Path, PathBuf};

pub use load::{load_file, load_str, substitute_env};
pub use model::Config;
pub use spans::{Gaps, Pos, Spans};
pub use validate::validate;

/// One thing wrong with a configuration, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// A key path such as `routes[2].upstream`, or the file a problem is about; empty when
    /// `place` says all there is to say (a YAML syntax error).
    pub location: String,
    /// `file:line:col`, when the problem is in the configuration file's text.
    pub place: Option<Place>,
    pub message: String,
}

/// A position in a named file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub file: String,
    pub pos: Pos,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)
    }
}

impl Problem {
    /// A problem known by its key path (or file); `Source::locate` adds its line and column.
    pub fn at(location: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            location: location.into(),
            place: None,
            message: message.into(),
        }
    }

    /// A problem at a known position in `file`, with no key path.
    pub fn in_text(file: &str, pos: Pos, message: impl Into<String>) -> Self {
        Problem {
            location: String::new(),
            place: Some(Place {
                file: file.to_string(),
                pos,
            }),
            message: message.into(),
        }
    }
}

/// `file:line:col: key.path: message`, leaving out what is not known.
impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(place) = &self.place {
            write!(f, "{place}: ")?;
        }
        if !self.location.is_empty() {
            write!(f, "{}: ", self.location)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in one configuration file.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl From<Vec<Problem>> for ConfigError {
    fn from(problems: Vec<Problem>) -> Self {
        ConfigError { problems }
    }
}

/// What the typed configuration does not say about the text it came from.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// The file's name as problems show it.
    pub file: String,
    /// Where each key path was written.
    pub spans: Spans,
    /// Key paths that were written but did not parse; empty for a configuration that loaded.
    pub gaps: Gaps,
}

impl Source {
    /// Gives each problem that has a key path but no place the line and column of that path
    /// (or of its nearest written ancestor), and puts them in the order of the file; problems
    /// with no place in it come last, in the order they were found.
    pub fn locate(&self, problems: Vec<Problem>) -> Vec<Problem> {
        let mut problems: Vec<Problem> = problems
            .into_iter()
            .map(|mut p| {
                if p.place.is_none() {
                    p.place = self.spans.at(&p.location).map(|pos| Place {
                        file: self.file.clone(),
                        pos,
                    });
                }
                p
            })
            .collect();
        problems.sort_by_key(|p| match &p.place {
            Some(place) => (0, place.pos.line, place.pos.col),
            None => (1, 0, 0),
        });
        problems
    }
}

/// A parsed configuration and where it came from (relative paths in it are relative to `dir`).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub path: PathBuf,
    pub dir: PathBuf,
    /// The text's positions; `Default` for a configuration built in code.
    pub source: Source,
}

impl Loaded {
    /// Resolves a path written in the file against the file's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() || self.dir == Path::new(".") {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }
}

/// Closest candidate to `word` for "did you mean" hints (edit distance at most 2).
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}
