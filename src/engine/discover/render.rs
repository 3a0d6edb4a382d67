//! The proposal as TOML: `[[sources.tables]]` entries with their evidence as comments,
//! written into the source of a config file so that the result is a config `check-config`
//! accepts. The rest of the file (its keys, comments and other sources) is kept as it was.

use toml_edit::{Array, ArrayOfTables, DocumentMut, InlineTable, Item, Table, Value, value};

use super::propose::{CoerceProposal, ColumnProposal, Proposal, TableProposal};

/// Why the config could not take the draft.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("the config is not valid TOML: {0}")]
    Parse(String),
    #[error("the config has no [[sources]] entry named '{0}'")]
    NoSource(String),
}

fn comment(lines: &[String]) -> String {
    lines
        .iter()
        .flat_map(|l| l.lines())
        .map(|l| format!("# {l}\n"))
        .collect()
}

fn rows(p: &TableProposal) -> String {
    let estimate = if p.estimated_rows < 0.0 {
        "never analysed".to_owned()
    } else {
        format!("about {} rows", p.estimated_rows.round() as i64)
    };
    format!("{}: {estimate}, {} sampled", p.name, p.sampled_rows)
}

fn column_value(column: &ColumnProposal) -> Item {
    if column.coerce.is_none() && !column.scan_json {
        return value(column.category.as_str());
    }
    let mut rule = InlineTable::new();
    rule.insert("category", column.category.as_str().into());
    match &column.coerce {
        Some(CoerceProposal::Date { formats }) => {
            rule.insert("coerce", "date".into());
            rule.insert(
                "formats",
                Value::Array(formats.iter().map(String::as_str).collect::<Array>()),
            );
        }
        Some(CoerceProposal::Epoch(unit)) => {
            rule.insert("coerce", unit.name().into());
        }
        None => {}
    }
    if column.scan_json {
        rule.insert("scan_json", true.into());
    }
    value(rule)
}

/// One table of the draft.
pub fn table(p: &TableProposal) -> Table {
    let mut t = Table::new();
    let mut header = vec![rows(p)];
    if let Some(error) = &p.sample_error {
        header.push(format!(
            "sampling stopped ({error}): the evidence below is from names only"
        ));
    }
    header.extend(p.notes.iter().map(|n| format!("note: {n}")));
    t.decor_mut().set_prefix(format!("\n{}", comment(&header)));
    t.insert("name", value(p.name.as_str()));

    if !p.identities.is_empty() {
        let mut identities = Array::new();
        let mut why = Vec::new();
        for identity in &p.identities {
            let mut entry = InlineTable::new();
            entry.insert("kind", identity.kind.as_str().into());
            entry.insert("column", identity.column.as_str().into());
            if identity.matching != crate::config::MatchMode::Exact {
                entry.insert("match", identity.matching.name().into());
            }
            identities.push(Value::InlineTable(entry));
            why.push(format!(
                "identity {}: {}",
                identity.column, identity.evidence
            ));
        }
        t.insert("identity", value(identities));
        if let Some(mut key) = t.key_mut("identity") {
            key.leaf_decor_mut().set_prefix(comment(&why));
        }
    }
    if !p.references.is_empty() {
        let mut references = Array::new();
        let mut why = Vec::new();
        for reference in &p.references {
            let mut entry = InlineTable::new();
            entry.insert("column", reference.column.as_str().into());
            entry.insert("table", reference.table.as_str().into());
            entry.insert("to", reference.to.as_str().into());
            entry.insert("reach", reference.reach.name().into());
            references.push(Value::InlineTable(entry));
            why.push(format!(
                "reference {}: {}",
                reference.column, reference.evidence
            ));
        }
        t.insert("reference", value(references));
        if let Some(mut key) = t.key_mut("reference") {
            key.leaf_decor_mut().set_prefix(comment(&why));
        }
    }

    if !p.erase.action.is_empty() {
        let mut erase = InlineTable::new();
        erase.insert("action", p.erase.action.as_str().into());
        if p.erase.action == "retain" {
            erase.insert(
                "reason",
                "looked up by the subject's rows, and possibly shared with other people".into(),
            );
        }
        t.insert("erase", value(erase));
        if let Some(mut key) = t.key_mut("erase") {
            key.leaf_decor_mut()
                .set_prefix(comment(&[format!("erase: {}", p.erase.evidence)]));
        }
    }

    let mut columns = Table::new();
    for column in &p.columns {
        columns.insert(&column.name, column_value(column));
        if let Some(mut key) = columns.key_mut(&column.name) {
            let line = format!(
                "{} ({}): {}",
                column.name,
                column.type_name,
                column.evidence.join("; ")
            );
            key.leaf_decor_mut().set_prefix(comment(&[line]));
        }
    }
    t.insert("columns", Item::Table(columns));
    t
}

/// The draft's closing comment: tables no identity reaches and kinds no column was found for.
pub fn closing(proposal: &Proposal, source: &str) -> String {
    let mut lines = Vec::new();
    if !proposal.kinds_without_identity.is_empty() {
        lines.push(format!(
            "No column was found for identity kind(s) {} of source '{source}': add an identity \
             for each, or remove the kind from identity_kinds.",
            proposal.kinds_without_identity.join(", ")
        ));
    }
    if !proposal.unreachable.is_empty() {
        lines.push(format!(
            "Tables of source '{source}' that no identity reaches (not in the draft):"
        ));
        for u in &proposal.unreachable {
            lines.push(format!("  {}: {}", u.table, u.reason));
        }
    }
    comment(&lines)
}

/// One table as a TOML fragment (`[[sources.tables]]` and its columns).
pub fn fragment(p: &TableProposal) -> String {
    let mut doc = DocumentMut::new();
    let mut sources = Table::new();
    sources.set_implicit(true);
    let mut tables = ArrayOfTables::new();
    tables.push(table(p));
    sources.insert("tables", Item::ArrayOfTables(tables));
    doc.insert("sources", Item::Table(sources));
    doc.to_string().trim_start().to_owned()
}

/// `config` with the tables of `source` replaced by the draft.
pub fn into_config(config: &str, source: &str, proposal: &Proposal) -> Result<String, RenderError> {
    let mut doc: DocumentMut = config
        .parse()
        .map_err(|e: toml_edit::TomlError| RenderError::Parse(e.to_string()))?;
    let entry = doc
        .get_mut("sources")
        .and_then(Item::as_array_of_tables_mut)
        .and_then(|sources| {
            sources
                .iter_mut()
                .find(|s| s.get("name").and_then(Item::as_str) == Some(source))
        })
        .ok_or_else(|| RenderError::NoSource(source.to_owned()))?;
    let mut tables = ArrayOfTables::new();
    for (i, p) in proposal.tables.iter().enumerate() {
        let mut t = table(p);
        if i == 0 {
            let prefix = t
                .decor()
                .prefix()
                .and_then(|r| r.as_str())
                .unwrap_or("")
                .to_owned();
            t.decor_mut().set_prefix(format!(
                "\n# The data map below was drafted by `dsr-connector discover` from the live\n\
                 # database. Check every proposal, above all those marked \"check\".\n{prefix}"
            ));
        }
        tables.push(t);
    }
    entry.insert("tables", Item::ArrayOfTables(tables));
    let closing = closing(proposal, source);
    if !closing.is_empty() {
        let trailing = doc.trailing().as_str().unwrap_or("").to_owned();
        doc.set_trailing(format!("{trailing}\n{closing}"));
    }
    Ok(doc.to_string())
}
