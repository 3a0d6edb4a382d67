//! An access request's package on the package store (a directory that replicas share): one
//! folder per source in the `extract --out` format, then a top-level `manifest.json` (every
//! file with its SHA-256, and when each source was read) and `README.txt` for the person.
//!
//! Each attempt at a source writes a part of its own, `.attempts/<source>.<attempt>`, which
//! the package writer renames into place only when complete. A replica that lost its lease
//! may still be writing its part; it never touches another attempt's. The request's last
//! step, under its row lock, moves the settled attempts' parts to `<source>/` and removes the
//! rest; run again after a crash, it finds what it already moved.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use prost::Message as _;
use sha2::{Digest, Sha256};

use crate::pb;
use crate::store::postgres::requests::RequestRow;

const ATTEMPTS: &str = ".attempts";

/// The package folder of request `id`.
pub fn folder(root: &Path, id: &str) -> PathBuf {
    root.join(id)
}

/// The folder an attempt at a task writes (`folder` is the task's folder in the package).
pub fn part(root: &Path, id: &str, folder_name: &str, attempt: i32) -> PathBuf {
    folder(root, id)
        .join(ATTEMPTS)
        .join(format!("{folder_name}.{attempt}"))
}

/// Prepares an attempt's part: its parent exists, and what an earlier run of this same
/// attempt number left (it cannot be another replica's: attempts are numbered per claim) is
/// gone.
pub fn prepare_part(path: &Path) -> anyhow::Result<()> {
    let parent = path.parent().context("a part has a parent")?;
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    if path.exists() {
        std::fs::remove_dir_all(path)
            .with_context(|| format!("cannot remove {}", path.display()))?;
    }
    Ok(())
}

/// Removes an attempt's part that will not be settled, and then the folders above it that it
/// leaves empty (`.attempts`, and the request's folder when the request ended without a
/// package): nothing of a failed or cancelled request stays on the package store. A folder
/// that holds anything else stays.
pub fn discard_part(path: &Path) {
    let _ = std::fs::remove_dir_all(path);
    let attempts = path.parent();
    for dir in [attempts, attempts.and_then(Path::parent)]
        .into_iter()
        .flatten()
    {
        // Fails, as it should, on a folder that is not empty.
        let _ = std::fs::remove_dir(dir);
    }
}

/// Completes the package of `request`, whose every task succeeded: each source's settled part
/// moves to `<source>/`, other attempts' parts are removed, and the top-level manifest and
/// README are written. Returns the folder and the SHA-256 of its `manifest.json`.
pub fn complete(
    root: &Path,
    request: &RequestRow,
    sealed: bool,
) -> anyhow::Result<(PathBuf, String)> {
    let folder = folder(root, &request.id);
    let mut sources = Vec::new();
    for task in &request.tasks {
        let target = folder.join(&task.folder);
        let settled = folder.join(ATTEMPTS).join(&task.part);
        if settled.exists() {
            if target.exists() {
                std::fs::remove_dir_all(&target)
                    .with_context(|| format!("cannot remove {}", target.display()))?;
            }
            std::fs::rename(&settled, &target)
                .with_context(|| format!("cannot move {}", settled.display()))?;
        }
        anyhow::ensure!(
            target.is_dir(),
            "source '{}': its package part is missing",
            task.source
        );
        let manifest = task
            .result
            .as_deref()
            .map(pb::Manifest::decode)
            .transpose()?
            .unwrap_or_default();
        let mut files = Vec::new();
        list_files(&folder, &target, &mut files)?;
        files.sort();
        let mut listed = Vec::new();
        for relative in files {
            let bytes = std::fs::read(folder.join(&relative))?;
            listed.push(serde_json::json!({
                "path": relative,
                "bytes": bytes.len(),
                "sha256": hex::encode(Sha256::digest(&bytes)),
            }));
        }
        sources.push(serde_json::json!({
            "source": task.source,
            "folder": task.folder,
            "identity": { "kind": task.identity_kind, "path": task.path },
            "extraction_id": manifest.extraction_id,
            "subject_id": manifest.subject_id,
            "read_at": manifest.extraction_timestamp.map(timestamp_text),
            "rows": manifest.row_count,
            "tables": manifest.tables.len(),
            "files": listed,
        }));
    }
    let _ = std::fs::remove_dir_all(folder.join(ATTEMPTS));
    let top = serde_json::json!({
        "request_id": request.id,
        "kind": request.kind,
        "compliance_tag": request.compliance_tag,
        "submitted_at": request.created.to_rfc3339(),
        "due_at": request.due_time.to_rfc3339(),
        "consistency": "each source was read from one snapshot of its own, at its read_at; \
                        there is no snapshot across databases",
        "sealed": sealed,
        "sources": sources,
    });
    let mut json = serde_json::to_vec_pretty(&top)?;
    json.push(b'\n');
    write_durably(&folder.join("manifest.json"), &json)?;
    write_durably(
        &folder.join("README.txt"),
        readme(request, sealed).as_bytes(),
    )?;
    Ok((folder, hex::encode(Sha256::digest(&json))))
}

/// Removes a request's package, whole.
pub fn remove(root: &Path, id: &str) -> anyhow::Result<()> {
    let folder = folder(root, id);
    match std::fs::remove_dir_all(&folder) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", folder.display())),
    }
}

fn list_files(base: &Path, dir: &Path, out: &mut Vec<String>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            list_files(base, &path, out)?;
        } else {
            out.push(
                path.strip_prefix(base)?
                    .to_string_lossy()
                    .replace(std::path::MAIN_SEPARATOR, "/"),
            );
        }
    }
    Ok(())
}

fn write_durably(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode_private()
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

trait Private {
    fn mode_private(&mut self) -> &mut Self;
}

impl Private for std::fs::OpenOptions {
    fn mode_private(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600)
    }
}

fn timestamp_text(t: prost_types::Timestamp) -> String {
    chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default()
}

fn readme(request: &RequestRow, sealed: bool) -> String {
    let mut text = format!(
        "Your data: request {}\n\n\
         This package holds every record of you that the systems below keep, as each of them\n\
         held it when it was read. Each folder is one system: its README.txt says what each\n\
         file and field means, and its manifest.json how many records each table holds.\n\
         manifest.json here lists every file with its SHA-256, so that you can check that\n\
         nothing was changed or left out.\n\nSystems:\n",
        request.id
    );
    for task in &request.tasks {
        text.push_str(&format!(
            "  {}/  ({} records, from {})\n",
            task.folder, task.rows, task.source
        ));
    }
    if sealed {
        text.push_str(
            "\nEvery file in the folders is encrypted (age, https://age-encryption.org): decrypt\n\
             one with `age -d -i key.txt FILE.age`, using the key the package was sealed for.\n",
        );
    }
    text
}
