//! Loading a policy directory: parse every `*.yaml` / `*.yml` file, validate
//! each and the set as a whole, and refuse the whole directory on any error.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::document::{AppliesTo, BackendRef, CustomCategory, PolicyDocument};
use crate::error::{ErrorKind, FieldPath, Location, PolicyError, PolicyErrors};
use crate::locate::Positions;
use crate::names::PolicyId;
use crate::taxonomy::CategoryCode;
use crate::validate::{check_document, KnownNames};
use crate::version::Version;

/// A validated document with where it came from and its version.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedPolicy {
    /// The document.
    pub document: PolicyDocument,
    /// The file it was read from.
    pub file: PathBuf,
    /// SHA-256 of its canonical content.
    pub version: Version,
}

impl LoadedPolicy {
    /// Wraps a document (already validated, or built in code) and computes
    /// its version.
    pub fn new(document: PolicyDocument, file: impl Into<PathBuf>) -> Self {
        let version = Version::of_document(&document);
        Self {
            document,
            file: file.into(),
            version,
        }
    }

    /// The document's id.
    pub fn id(&self) -> &PolicyId {
        &self.document.id
    }
}

/// A validated policy directory: the documents, ordered by id.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySet {
    pub(crate) policies: Vec<Arc<LoadedPolicy>>,
    pub(crate) custom: BTreeMap<CategoryCode, CustomCategory>,
    pub(crate) version: Version,
}

impl PolicySet {
    /// Builds a set from documents that were validated together.
    pub(crate) fn from_loaded(mut policies: Vec<LoadedPolicy>) -> Self {
        policies.sort_by(|a, b| a.id().cmp(b.id()));
        let mut custom = BTreeMap::new();
        let mut listing = String::new();
        for p in &policies {
            if let Some(cats) = &p.document.categories {
                for (code, c) in &cats.custom {
                    custom.entry(*code).or_insert_with(|| c.clone());
                }
            }
            listing.push_str(&format!("{} {}\n", p.id(), p.version));
        }
        Self {
            policies: policies.into_iter().map(Arc::new).collect(),
            custom,
            version: Version::of_bytes(listing.as_bytes()),
        }
    }

    /// All documents, ordered by id.
    pub fn policies(&self) -> &[Arc<LoadedPolicy>] {
        &self.policies
    }

    /// The document with this id.
    pub fn get(&self, id: &str) -> Option<&Arc<LoadedPolicy>> {
        self.policies.iter().find(|p| p.id().as_str() == id)
    }

    /// A hash over every document's id and version: changes whenever any
    /// document does.
    pub fn version(&self) -> &Version {
        &self.version
    }

    /// Custom categories defined anywhere in the directory.
    pub fn custom_categories(&self) -> &BTreeMap<CategoryCode, CustomCategory> {
        &self.custom
    }
}

/// What `warden policy check DIR` prints: the documents that passed and all
/// errors.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckReport {
    /// The directory checked.
    pub dir: PathBuf,
    /// Documents that parsed and validated on their own.
    pub policies: Vec<LoadedPolicy>,
    /// Every error found; when not empty the directory is refused whole.
    pub errors: Vec<PolicyError>,
}

impl CheckReport {
    /// True when the directory would be accepted.
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.policies {
            writeln!(
                f,
                "ok    {}  {}  ({}, version {})",
                p.file.display(),
                p.id(),
                p.document.applies_to,
                p.version.short()
            )?;
        }
        for e in &self.errors {
            writeln!(f, "error {e}")?;
        }
        if self.is_ok() {
            write!(
                f,
                "{}: {} policies valid",
                self.dir.display(),
                self.policies.len()
            )
        } else {
            write!(
                f,
                "{}: refused, {} error(s)",
                self.dir.display(),
                self.errors.len()
            )
        }
    }
}

/// Validates a directory and reports everything found; the function behind
/// `warden policy check DIR`.
pub fn check_dir(dir: &Path, known: &KnownNames) -> CheckReport {
    let mut report = CheckReport {
        dir: dir.to_owned(),
        policies: Vec::new(),
        errors: Vec::new(),
    };
    let files = match policy_files(dir) {
        Ok(files) => files,
        Err(e) => {
            report
                .errors
                .push(whole_file(dir, ErrorKind::Io(e.to_string())));
            return report;
        }
    };

    let mut positions = BTreeMap::new();
    for file in files {
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                report
                    .errors
                    .push(whole_file(&file, ErrorKind::Io(e.to_string())));
                continue;
            }
        };
        match parse_document(&file, &text) {
            Err(e) => report.errors.push(*e),
            Ok(doc) => {
                let pos = Positions::index(&text);
                let errs = check_document(&doc, known, &pos);
                if errs.is_empty() {
                    report.policies.push(LoadedPolicy::new(doc, &file));
                } else {
                    report
                        .errors
                        .extend(errs.into_iter().map(|(f, k)| at(&file, &pos, f, k)));
                }
                positions.insert(file, pos);
            }
        }
    }

    check_across(&mut report, &positions);
    report
}

/// Loads and validates a directory; any error refuses it whole and all errors
/// are returned.
pub fn load_dir(dir: &Path, known: &KnownNames) -> Result<PolicySet, PolicyErrors> {
    let report = check_dir(dir, known);
    if report.is_ok() {
        Ok(PolicySet::from_loaded(report.policies))
    } else {
        Err(PolicyErrors(report.errors))
    }
}

/// Parses one document; the error names the file, line, column and field.
pub fn parse_document(file: &Path, text: &str) -> Result<PolicyDocument, Box<PolicyError>> {
    let de = serde_norway::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = FieldPath::from(e.path());
        let inner = e.inner();
        let location = inner
            .location()
            .map(|l| Location {
                line: l.line(),
                column: l.column(),
            })
            // Values serde buffers (internally tagged enums such as
            // `streaming`) lose their position; find the field instead.
            .filter(|l| field.is_root() || (l.line, l.column) != (1, 1))
            .or_else(|| Positions::index(text).locate(&field));
        Box::new(PolicyError {
            file: file.to_owned(),
            location,
            kind: ErrorKind::Parse(bare_message(inner, &field)),
            field,
        })
    })
}

/// The YAML error's message without the path and position it repeats (the
/// error carries both separately).
fn bare_message(e: &serde_norway::Error, field: &FieldPath) -> String {
    let mut msg = e.to_string();
    if let Some(i) = msg.rfind(" at line ") {
        msg.truncate(i);
    }
    // serde_norway prefixes the path of the enclosing mapping.
    let mut p = field.clone();
    loop {
        if let Some(rest) = msg.strip_prefix(&format!("{p}: ")) {
            return rest.to_owned();
        }
        if p.is_root() {
            return msg;
        }
        p = p.parent();
    }
}

/// Policy files of a directory (not recursive), in name order. Hidden files
/// (editor lock and swap files) are skipped.
pub fn policy_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if is_policy_file(&path) && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// True for `*.yaml` / `*.yml` names that are not hidden.
pub fn is_policy_file(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'));
    let ext = path.extension().and_then(|e| e.to_str());
    !hidden && matches!(ext, Some("yaml" | "yml"))
}

fn whole_file(file: &Path, kind: ErrorKind) -> PolicyError {
    PolicyError {
        file: file.to_owned(),
        location: None,
        field: FieldPath::root(),
        kind,
    }
}

fn at(file: &Path, pos: &Positions, field: FieldPath, kind: ErrorKind) -> PolicyError {
    PolicyError {
        file: file.to_owned(),
        location: pos.locate(&field),
        field,
        kind,
    }
}

/// Checks that need the whole directory: unique ids, one meaning per custom
/// code, a baseline policy. Offending documents are dropped from the report's
/// valid list.
fn check_across(report: &mut CheckReport, positions: &BTreeMap<PathBuf, Positions>) {
    let empty = Positions::default();
    let pos_of = |f: &Path| positions.get(f).unwrap_or(&empty);
    let mut first_of_id: BTreeMap<PolicyId, PathBuf> = BTreeMap::new();
    let mut custom: BTreeMap<CategoryCode, (CustomCategory, PathBuf)> = BTreeMap::new();
    let mut bad = vec![false; report.policies.len()];
    let mut errors = Vec::new();

    for (i, p) in report.policies.iter().enumerate() {
        let pos = pos_of(&p.file);
        match first_of_id.get(p.id()) {
            Some(other) => {
                errors.push(at(
                    &p.file,
                    pos,
                    FieldPath::root().key("id"),
                    ErrorKind::DuplicateId {
                        id: p.id().to_string(),
                        other: other.display().to_string(),
                    },
                ));
                bad[i] = true;
            }
            None => {
                first_of_id.insert(p.id().clone(), p.file.clone());
            }
        }
        if let Some(cats) = &p.document.categories {
            for (code, def) in &cats.custom {
                match custom.get(code) {
                    Some((existing, other)) if existing != def => {
                        errors.push(at(
                            &p.file,
                            pos,
                            FieldPath::root()
                                .key("categories")
                                .key("custom")
                                .key(code.to_string()),
                            ErrorKind::CustomCategoryConflict {
                                code: *code,
                                other: other.display().to_string(),
                            },
                        ));
                        bad[i] = true;
                    }
                    Some(_) => {}
                    None => {
                        custom.insert(*code, (def.clone(), p.file.clone()));
                    }
                }
            }
        }
    }

    // Only a directory where every file parsed can be judged to lack a
    // default policy; otherwise the broken file may be the default.
    let all_parsed = report.errors.is_empty();
    let has_default = report
        .policies
        .iter()
        .any(|p| p.document.applies_to == AppliesTo::Default);
    if all_parsed && !has_default {
        errors.push(whole_file(&report.dir, ErrorKind::NoDefaultPolicy));
    }

    // Documents are merged with every default policy, so what a document
    // lacks may come from one; anything else could leave a checkpoint with
    // nothing to run or a model with nothing to classify.
    let defaults = || {
        report
            .policies
            .iter()
            .filter(|p| p.document.applies_to == AppliesTo::Default)
    };
    let default_backends = defaults().any(|p| !p.document.backends.is_empty());
    let default_categories = defaults().any(|p| p.document.categories.is_some());
    for (i, p) in report.policies.iter().enumerate() {
        let doc = &p.document;
        let pos = pos_of(&p.file);
        if !doc.checkpoints.is_empty() && doc.backends.is_empty() && !default_backends {
            errors.push(at(
                &p.file,
                pos,
                FieldPath::root().key("checkpoints"),
                ErrorKind::CheckpointsWithoutBackend,
            ));
            bad[i] = true;
        }
        let runs_model = doc
            .backends
            .iter()
            .any(|b| matches!(b, BackendRef::Named(_)));
        if runs_model && doc.categories.is_none() && !default_categories {
            errors.push(at(
                &p.file,
                pos,
                FieldPath::root().key("backends"),
                ErrorKind::ModelBackendWithoutCategories,
            ));
            bad[i] = true;
        }
    }

    let mut keep = bad.into_iter().map(|b| !b);
    report.policies.retain(|_| keep.next().unwrap_or(true));
    report.errors.extend(errors);
}
