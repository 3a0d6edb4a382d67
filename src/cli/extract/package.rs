//! A data package: what one extraction returned, as files a person can read and a program can
//! parse. One JSON-lines file per table, `manifest.json`, and a `README.txt` that says what
//! each table and category means.
//!
//! The package is written to a hidden temporary directory beside its destination and renamed
//! into place only once the manifest has arrived and every count agrees, so a package that
//! exists is complete. A failed extraction leaves nothing behind.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};

use super::render;
use crate::pb;

/// The manifest's file name in a package.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The explanation's file name in a package.
pub const README_FILE: &str = "README.txt";

/// A package being written.
pub struct Package {
    out: PathBuf,
    dir: tempfile::TempDir,
    started: Option<pb::ExtractionStarted>,
    tables: Vec<TableFile>,
    /// Whom every file is encrypted to, when the package is sealed.
    sealing: Option<Sealing>,
}

/// The name a sealed file has: its own, and this.
pub const SEALED_SUFFIX: &str = ".age";

/// The recipients a sealed package is encrypted to: age X25519 public keys (`age1...`). Each
/// file is an age file that any one of their identities decrypts (`age -d -i key.txt`).
#[derive(Clone)]
pub struct Sealing(std::sync::Arc<Vec<age::x25519::Recipient>>);

impl Sealing {
    /// Parses public keys; the error names the first that is not one.
    pub fn parse(keys: &[String]) -> Result<Sealing, String> {
        let recipients = keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                key.trim().parse::<age::x25519::Recipient>().map_err(|e| {
                    format!("recipient {i}: not an age X25519 public key (age1...): {e}")
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        if recipients.is_empty() {
            return Err("no recipient".into());
        }
        Ok(Sealing(std::sync::Arc::new(recipients)))
    }

    fn encryptor(&self) -> std::io::Result<age::Encryptor> {
        age::Encryptor::with_recipients(self.0.iter().map(|r| r as &dyn age::Recipient))
            .map_err(std::io::Error::other)
    }
}

/// Where a file's bytes go: the file itself, or an age stream over it.
enum Sink {
    Plain(BufWriter<File>),
    Sealed(age::stream::StreamWriter<BufWriter<File>>),
}

impl Sink {
    fn open(path: &Path, sealing: Option<&Sealing>) -> anyhow::Result<Sink> {
        let file = BufWriter::with_capacity(256 * 1024, private_file(path)?);
        Ok(match sealing {
            None => Sink::Plain(file),
            Some(sealing) => Sink::Sealed(sealing.encryptor()?.wrap_output(file)?),
        })
    }

    /// Ends the file (an age stream's last chunk) and makes it durable.
    fn close(self) -> anyhow::Result<()> {
        let file = match self {
            Sink::Plain(file) => file,
            Sink::Sealed(stream) => stream.finish()?,
        };
        file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        Ok(())
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::Plain(w) => w.write(buf),
            Sink::Sealed(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Plain(w) => w.flush(),
            Sink::Sealed(w) => w.flush(),
        }
    }
}

/// One table's file and what the stream said about it.
struct TableFile {
    table: String,
    file_name: String,
    columns: Vec<pb::ColumnDescriptor>,
    writer: Option<Sink>,
    rows: u64,
    expected: Option<u64>,
    completed: Option<pb::TableCompleted>,
}

/// What a finished package holds.
#[derive(Debug)]
pub struct Written {
    pub path: PathBuf,
    pub rows: u64,
    pub tables: usize,
    pub extraction_id: String,
}

impl Package {
    /// Starts a package that will be `out`. Refuses when `out` exists.
    pub fn create(out: &Path) -> anyhow::Result<Package> {
        Package::create_sealed(out, None)
    }

    /// [`Package::create`], every file encrypted to `sealing`'s recipients when given (and
    /// named with [`SEALED_SUFFIX`]): no byte of it is written in the clear.
    pub fn create_sealed(out: &Path, sealing: Option<Sealing>) -> anyhow::Result<Package> {
        ensure!(
            !out.exists(),
            "{} already exists; choose a new directory for the package",
            out.display()
        );
        let name = out
            .file_name()
            .with_context(|| format!("{} does not name a directory", out.display()))?
            .to_string_lossy()
            .into_owned();
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        // Beside the destination, so that the final rename stays on one file system. The
        // directory is private to the user (0700): it holds personal data.
        let dir = tempfile::Builder::new()
            .prefix(&format!(".{name}.partial-"))
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir_in(&parent)
            .with_context(|| format!("cannot create a directory in {}", parent.display()))?;
        Ok(Package {
            out: out.to_path_buf(),
            dir,
            started: None,
            tables: Vec::new(),
            sealing,
        })
    }

    /// The plan: one file per planned table, created now, so that a table without rows has
    /// an empty file.
    pub fn start(&mut self, started: &pb::ExtractionStarted) -> anyhow::Result<()> {
        ensure!(self.started.is_none(), "a second `started` event");
        let mut used = std::collections::HashSet::new();
        for planned in &started.tables {
            let file_name = self.sealed_name(unique_file_name(&planned.table, &mut used));
            let writer = Sink::open(&self.dir.path().join(&file_name), self.sealing.as_ref())?;
            self.tables.push(TableFile {
                table: planned.table.clone(),
                file_name,
                columns: planned.columns.clone(),
                writer: Some(writer),
                rows: 0,
                expected: None,
                completed: None,
            });
        }
        self.started = Some(started.clone());
        Ok(())
    }

    /// A table's count, before its rows.
    pub fn table_started(&mut self, event: &pb::TableStarted) -> anyhow::Result<u64> {
        let table = self.table(&event.table)?;
        ensure!(
            table.expected.is_none(),
            "table '{}' was started twice",
            event.table
        );
        table.expected = Some(event.expected_rows);
        Ok(event.expected_rows)
    }

    /// Writes a batch's rows to its table's file. Returns the rows written.
    pub fn batch(&mut self, batch: &pb::RowBatch) -> anyhow::Result<u64> {
        let table = self.table(&batch.table)?;
        ensure!(
            table.completed.is_none(),
            "rows for table '{}' after its completion",
            batch.table
        );
        ensure!(
            batch.offset == table.rows,
            "table '{}': a batch at offset {} after {} rows",
            batch.table,
            batch.offset,
            table.rows
        );
        let writer = table.writer.as_mut().expect("open until completed");
        for row in &batch.rows {
            render::write_row(writer, &table.columns, row)
                .with_context(|| format!("table '{}', row {}", batch.table, table.rows))?;
            writer.write_all(b"\n")?;
            table.rows += 1;
        }
        Ok(batch.rows.len() as u64)
    }

    /// A table is complete: its file is flushed to disk, and the streamed rows must be what
    /// the server counted.
    pub fn table_completed(&mut self, done: &pb::TableCompleted) -> anyhow::Result<()> {
        let table = self.table(&done.table)?;
        ensure!(
            done.row_count == table.rows,
            "table '{}': {} rows received, the server says {}",
            done.table,
            table.rows,
            done.row_count
        );
        if let Some(expected) = table.expected {
            ensure!(
                expected == done.row_count + done.rejected_count,
                "table '{}': {} rows announced, {} streamed and {} left out",
                done.table,
                expected,
                done.row_count,
                done.rejected_count
            );
        }
        let writer = table.writer.take().context("a table completed twice")?;
        writer.close()?;
        table.completed = Some(done.clone());
        Ok(())
    }

    /// The manifest arrived: it must agree with every table, then `manifest.json` and
    /// `README.txt` are written and the package is renamed into place.
    pub fn finish(self, manifest: &pb::Manifest) -> anyhow::Result<Written> {
        let started = self.started.as_ref().context("a manifest without a plan")?;
        ensure!(
            manifest.tables.len() == self.tables.len(),
            "the manifest lists {} tables, the plan {}",
            manifest.tables.len(),
            self.tables.len()
        );
        for (counted, table) in manifest.tables.iter().zip(&self.tables) {
            ensure!(
                table.completed.is_some(),
                "table '{}' never completed",
                table.table
            );
            ensure!(
                counted.table == table.table && counted.row_count == table.rows && counted.verified,
                "the manifest's count for '{}' does not match the stream",
                table.table
            );
        }
        let rows: u64 = self.tables.iter().map(|t| t.rows).sum();
        ensure!(
            manifest.row_count == rows,
            "the manifest counts {} rows, the stream had {rows}",
            manifest.row_count
        );

        let mut json = serde_json::to_vec_pretty(&render::manifest_json(manifest))?;
        json.push(b'\n');
        self.write_file(MANIFEST_FILE, &json)?;
        let readme = readme(started, &self.tables, manifest);
        self.write_file(README_FILE, readme.as_bytes())?;

        if self.out.exists() {
            bail!(
                "{} appeared while the package was written; the package was not moved there",
                self.out.display()
            );
        }
        let partial = self.dir.keep();
        if let Err(e) = std::fs::rename(&partial, &self.out) {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(e)
                .with_context(|| format!("cannot move the package to {}", self.out.display()));
        }
        if let Some(parent) = self.out.parent().filter(|p| !p.as_os_str().is_empty()) {
            // The rename itself is durable once the directory is.
            if let Ok(dir) = File::open(parent) {
                let _ = dir.sync_all();
            }
        }
        Ok(Written {
            path: self.out,
            rows,
            tables: self.tables.len(),
            extraction_id: manifest.extraction_id.clone(),
        })
    }

    /// A file's name in this package: sealed files end with [`SEALED_SUFFIX`].
    fn sealed_name(&self, name: String) -> String {
        match self.sealing {
            Some(_) => name + SEALED_SUFFIX,
            None => name,
        }
    }

    /// Writes a whole file of the package, durably (sealed when the package is).
    fn write_file(&self, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
        let path = self.dir.path().join(self.sealed_name(name.to_owned()));
        let mut sink = Sink::open(&path, self.sealing.as_ref())?;
        sink.write_all(bytes)?;
        sink.close()
    }

    fn table(&mut self, name: &str) -> anyhow::Result<&mut TableFile> {
        self.tables
            .iter_mut()
            .find(|t| t.table == name)
            .with_context(|| format!("the stream sent table '{name}', which is not in the plan"))
    }
}

/// A file name for a table's rows: the table name where it is a plain name, with anything
/// else replaced, so that no name from the server reaches outside the package.
fn unique_file_name(table: &str, used: &mut std::collections::HashSet<String>) -> String {
    let mut base: String = table
        .chars()
        .take(100)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if base.is_empty() || base.starts_with('.') {
        base.insert(0, '_');
    }
    let mut name = format!("{base}.jsonl");
    let mut n = 2;
    while !used.insert(name.clone()) {
        name = format!("{base}-{n}.jsonl");
        n += 1;
    }
    name
}

/// Creates a file that only its owner can read.
fn private_file(path: &Path) -> anyhow::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))
}

/// The package's explanation, for the data subject.
fn readme(
    started: &pb::ExtractionStarted,
    tables: &[TableFile],
    manifest: &pb::Manifest,
) -> String {
    let snapshot = manifest
        .extraction_timestamp
        .as_ref()
        .map(render::timestamp)
        .unwrap_or_default();
    let described: BTreeMap<&str, &str> = started
        .categories
        .iter()
        .map(|c| (c.name.as_str(), c.description.as_str()))
        .collect();
    let mut s = String::new();
    let _ = writeln!(s, "Your personal data from \"{}\"", manifest.source);
    let _ = writeln!(s, "{}", "=".repeat(26 + manifest.source.chars().count()));
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "This package holds every record about you that was found in \"{}\", looked up by\n\
         your {}. All of it was read from one consistent copy (snapshot) of the database, taken\n\
         at {snapshot}. For each table, the number of records written here was checked\n\
         against the database's own count in the same snapshot.",
        manifest.source, manifest.subject_kind
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "Request:     {}", manifest.request_id);
    let _ = writeln!(s, "Extraction:  {}", manifest.extraction_id);
    let _ = writeln!(
        s,
        "Reference:   {} (a keyed fingerprint of the identity you gave, not the identity itself)",
        manifest.subject_id
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "Files");
    let _ = writeln!(s, "-----");
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{MANIFEST_FILE}\n    The verified record of this extraction: the tables, their record counts, the\n    fields searched and when. It is protobuf JSON (dsr.v1.Manifest)."
    );
    for (table, planned) in tables.iter().zip(&started.tables) {
        let done = table.completed.as_ref();
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{}\n    Table \"{}\": {} record{}.{}",
            table.file_name,
            table.table,
            table.rows,
            if table.rows == 1 { "" } else { "s" },
            if planned.description.is_empty() {
                String::new()
            } else {
                format!(" {}", planned.description)
            }
        );
        let _ = writeln!(
            s,
            "    One record per line, as a JSON object with these fields:"
        );
        let width = table
            .columns
            .iter()
            .map(|c| c.name.chars().count())
            .max()
            .unwrap_or(0);
        for column in &table.columns {
            let _ = writeln!(
                s,
                "      {:width$}  {}",
                column.name,
                if column.category == crate::classify::NOT_PII {
                    "not personal data on its own".to_owned()
                } else {
                    column.category.clone()
                }
            );
        }
        if let Some(done) = done {
            if done.rejected_count > 0 {
                let _ = writeln!(
                    s,
                    "    {} more record{} of this table could not be read as declared and {} not\n    included here; ask us about {}, quoting the extraction id above.",
                    done.rejected_count,
                    if done.rejected_count == 1 { "" } else { "s" },
                    if done.rejected_count == 1 {
                        "is"
                    } else {
                        "are"
                    },
                    if done.rejected_count == 1 {
                        "it"
                    } else {
                        "them"
                    },
                );
            }
            if !done.pii_fields.is_empty() {
                let _ = writeln!(s, "    Inside its JSON fields we also found:");
                for field in &done.pii_fields {
                    let (path, category) = field.rsplit_once(':').unwrap_or((field, ""));
                    let _ = writeln!(s, "      {path}  {category}");
                }
            }
        }
    }
    if !started.unreachable_tables.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(s, "Not searched");
        let _ = writeln!(s, "------------");
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "These tables cannot be reached from your {}, so they were not searched:",
            manifest.subject_kind
        );
        for u in &started.unreachable_tables {
            let _ = writeln!(s, "  {}: {}", u.table, u.reason);
        }
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "What the categories mean");
    let _ = writeln!(s, "------------------------");
    let _ = writeln!(s);
    for (name, description) in &described {
        if *name == crate::classify::NOT_PII {
            continue;
        }
        let _ = writeln!(
            s,
            "  {name}: {}",
            if description.is_empty() {
                "(no description given)"
            } else {
                description
            }
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "How values are written");
    let _ = writeln!(s, "----------------------");
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "  Times are UTC, in ISO 8601 (2024-03-14T09:26:53Z); dates are YYYY-MM-DD.\n  \
         Exact decimal numbers (amounts of money, for example) are text, so that no digit is\n  \
         lost. Binary data is base64. Nested documents are JSON, as stored. A missing value\n  \
         is null."
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_stay_inside_the_package_and_are_unique() {
        let mut used = std::collections::HashSet::new();
        assert_eq!(unique_file_name("orders", &mut used), "orders.jsonl");
        assert_eq!(
            unique_file_name("billing.invoices", &mut used),
            "billing.invoices.jsonl"
        );
        assert_eq!(
            unique_file_name("../../etc/passwd", &mut used),
            "_.._.._etc_passwd.jsonl"
        );
        assert_eq!(unique_file_name(".hidden", &mut used), "_.hidden.jsonl");
        assert_eq!(unique_file_name("", &mut used), "_.jsonl");
        assert_eq!(unique_file_name("a/b", &mut used), "a_b.jsonl");
        assert_eq!(unique_file_name("a?b", &mut used), "a_b-2.jsonl");
    }
}
