//! Links between sources, proposed from the data maps and the data: a column of one source's
//! identity table whose values are identities of a kind that other sources declare (the
//! shop's `customers.id` is the CRM's `shop_customer_id`).
//!
//! A candidate pairs such a column with a kind when their types can hold the same values.
//! Each candidate's column, and each identity column of the kind in the other sources, is read
//! in a read-only snapshot of its own source (at most `scan` rows, by the same sampling as
//! `discover`); every value is normalised as the kind says and hashed with a key made for this
//! run, and only the hashes are kept, in memory, until the run ends. A candidate is proposed
//! when some values are common to both and its names agree, or when most values of the
//! smaller side are in the other: with the names and the counts as its evidence, for a person
//! to check. No value is written, logged or sent from one database to another.

use std::collections::HashSet;
use std::hash::BuildHasher;
use std::time::Duration;

use crate::config::{Config, QualifiedName, SourceConfig};
use crate::store::discovery::{Column, DiscoverySnapshot, Filter, SampleLimits, Table};
use crate::store::error::DbError;
use crate::store::{Backend, SourceStore, WithStore};

/// Rows read per column unless asked otherwise.
pub const DEFAULT_SCAN: u32 = 100_000;
/// The most rows a caller may ask to read per column.
pub const MAX_SCAN: u32 = 1_000_000;

/// A proposed link, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkProposal {
    pub source: String,
    pub table: String,
    pub column: String,
    pub kind: String,
    /// Names, types and counts; never a value.
    pub evidence: String,
    /// The config has this link already.
    pub configured: bool,
}

/// A column that is read: a source's mapped table and one of its columns, with the kind its
/// values are normalised as.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Read {
    source: usize,
    table: String,
    column: String,
    kind: String,
}

/// What reading a column found: the keyed hashes of its distinct values (empty when they
/// were counted against a kind's and dropped), how many there were, how many of them the
/// kind's identity columns hold, and whether it is an integer column.
struct Hashed {
    set: HashSet<u64>,
    distinct: usize,
    common: usize,
    integer: bool,
}

/// A link that might be: `from` (a column of an identity table) yields `kind`, which the
/// identity columns `targets` (of other sources) hold.
#[derive(Debug)]
struct Candidate {
    from: Read,
    targets: Vec<Read>,
    names: Option<String>,
}

/// Proposes links between the sources of `config`, reading at most `scan` rows per column,
/// each statement cancelled after `statement_timeout`. One kind at a time: the hashes of its
/// identity columns in the other sources are kept while each candidate column is read and
/// counted against them, then dropped, so memory holds one kind's hashes and one column's.
pub async fn propose(
    config: &Config,
    scan: u32,
    statement_timeout: Duration,
) -> Result<Vec<LinkProposal>, String> {
    let candidates = candidates(config);
    let key = std::collections::hash_map::RandomState::new();
    // Each source read is opened once, for every kind.
    let mut stores = Vec::with_capacity(config.sources.len());
    for (index, source) in config.sources.iter().enumerate() {
        let read = candidates
            .iter()
            .any(|c| c.from.source == index || c.targets.iter().any(|t| t.source == index));
        stores.push(if read {
            Some(SourceStore::open(source)?)
        } else {
            None
        });
    }
    let reading = Reading {
        config,
        stores: &stores,
        scan: scan.clamp(1, MAX_SCAN),
        statement_timeout,
        key: &key,
    };
    let proposals = proposals(&reading, &candidates).await;
    for store in stores.into_iter().flatten() {
        store.close().await;
    }
    proposals
}

/// The candidates proposed, one kind at a time.
async fn proposals(
    reading: &Reading<'_>,
    candidates: &[Candidate],
) -> Result<Vec<LinkProposal>, String> {
    let config = reading.config;
    let mut kinds: Vec<&str> = candidates.iter().map(|c| c.from.kind.as_str()).collect();
    kinds.sort();
    kinds.dedup();
    let mut proposals = Vec::new();
    for kind in kinds {
        let of_kind: Vec<&Candidate> = candidates.iter().filter(|c| c.from.kind == kind).collect();
        let mut targets: Vec<Read> = of_kind.iter().flat_map(|c| c.targets.clone()).collect();
        targets.sort();
        targets.dedup();
        let mut held = HashSet::new();
        let mut where_held = Vec::new();
        for (target, hashed) in reading.read(&targets, None).await? {
            if let Some(hashed) = hashed {
                held.extend(hashed.set);
                where_held.push(reading.name(&target));
            }
        }
        let from: Vec<Read> = of_kind.iter().map(|c| c.from.clone()).collect();
        let counted = reading.read(&from, Some(&held)).await?;
        for (candidate, (_, hashed)) in of_kind.iter().zip(counted) {
            let Some(hashed) = hashed else { continue };
            let Some(evidence) = evidence(reading, candidate, &hashed, held.len(), &where_held)
            else {
                continue;
            };
            let from = &candidate.from;
            let source = &config.sources[from.source].name;
            proposals.push(LinkProposal {
                configured: config.links.iter().any(|l| {
                    l.from.source == *source
                        && l.from.table == from.table
                        && l.from.column == from.column
                        && l.kind == from.kind
                }),
                source: source.clone(),
                table: from.table.clone(),
                column: from.column.clone(),
                kind: from.kind.clone(),
                evidence,
            });
        }
    }
    proposals
        .sort_by(|a, b| (&a.source, &a.table, &a.column).cmp(&(&b.source, &b.table, &b.column)));
    Ok(proposals)
}

/// How columns are read: the config, the rows per column, the statement timeout and the
/// run's hash key.
struct Reading<'a> {
    config: &'a Config,
    /// Each source's store, opened when a column of it is read.
    stores: &'a [Option<SourceStore>],
    scan: u32,
    statement_timeout: Duration,
    key: &'a std::collections::hash_map::RandomState,
}

impl Reading<'_> {
    /// `source.table.column`.
    fn name(&self, read: &Read) -> String {
        format!(
            "{}.{}.{}",
            self.config.sources[read.source].name, read.table, read.column
        )
    }

    /// Reads `reads`, source by source, each in one snapshot. With `against`, each column's
    /// values are counted against it and its own hashes dropped.
    async fn read(
        &self,
        reads: &[Read],
        against: Option<&HashSet<u64>>,
    ) -> Result<Vec<(Read, Option<Hashed>)>, String> {
        let mut out: Vec<(Read, Option<Hashed>)> = Vec::with_capacity(reads.len());
        for (index, source) in self.config.sources.iter().enumerate() {
            let wanted: Vec<Read> = reads
                .iter()
                .filter(|r| r.source == index)
                .cloned()
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let Some(store) = &self.stores[index] else {
                continue;
            };
            let read = store
                .with(Hashing {
                    config: self.config,
                    source,
                    reads: &wanted,
                    scan: self.scan,
                    statement_timeout: self.statement_timeout,
                    key: self.key,
                    against,
                })
                .await;
            let read = read.map_err(|e| format!("source '{}': {e}", source.name))?;
            out.extend(wanted.into_iter().zip(read));
        }
        // In the order asked.
        out.sort_by_key(|(r, _)| reads.iter().position(|x| x == r));
        Ok(out)
    }
}

/// Every pairing of an identity table's column with a kind that other sources declare, where
/// the column is not already an identity column of that kind.
fn candidates(config: &Config) -> Vec<Candidate> {
    let mut found = Vec::new();
    for (s, source) in config.sources.iter().enumerate() {
        for table in source
            .tables
            .iter()
            .filter(|t| !t.identity.as_slice().is_empty())
        {
            for column in table.columns.keys() {
                let mut kinds: Vec<&String> = config
                    .sources
                    .iter()
                    .enumerate()
                    .filter(|(t, _)| *t != s)
                    .flat_map(|(_, other)| other.identity_kinds.iter())
                    .collect();
                kinds.sort();
                kinds.dedup();
                for kind in kinds {
                    let own = table
                        .identity
                        .as_slice()
                        .iter()
                        .any(|i| i.column == *column && i.kind == *kind);
                    if own {
                        continue;
                    }
                    let targets = identity_columns(config, s, kind);
                    if targets.is_empty() {
                        continue;
                    }
                    let target_names: Vec<&str> =
                        targets.iter().map(|t| t.column.as_str()).collect();
                    found.push(Candidate {
                        names: names_agree(&table.name, column, kind, &target_names),
                        from: Read {
                            source: s,
                            table: table.name.clone(),
                            column: column.clone(),
                            kind: kind.clone(),
                        },
                        targets,
                    });
                }
            }
        }
    }
    found
}

/// The identity columns of `kind` in every source but `except`.
fn identity_columns(config: &Config, except: usize, kind: &str) -> Vec<Read> {
    config
        .sources
        .iter()
        .enumerate()
        .filter(|(s, _)| *s != except)
        .flat_map(|(s, source)| {
            source.tables.iter().flat_map(move |table| {
                table
                    .identity
                    .as_slice()
                    .iter()
                    .filter(move |i| i.kind == kind)
                    .map(move |i| Read {
                        source: s,
                        table: table.name.clone(),
                        column: i.column.clone(),
                        kind: kind.to_owned(),
                    })
            })
        })
        .collect()
}

/// The words of a name, lower-case, a plural's `s` dropped: `customers.id` is `customer`,
/// `id`.
fn words(name: &str) -> Vec<String> {
    name.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            let w = w.to_ascii_lowercase();
            match w.strip_suffix('s') {
                Some(stem) if stem.len() > 2 && !stem.ends_with('s') => stem.to_owned(),
                _ => w,
            }
        })
        .collect()
}

/// Whether the names say that `table.column` holds `kind`: the column is named as the kind or
/// as a column that holds it elsewhere; or the kind's words are the table's and the column's
/// (`customers.id` and `shop_customer_id`); or the column's words hold the kind's
/// (`shop_customer_id` holds `customer_id`). How they agree, in words.
fn names_agree(table: &str, column: &str, kind: &str, targets: &[&str]) -> Option<String> {
    let table_name = table.rsplit('.').next().unwrap_or(table);
    if column == kind || (column != "id" && targets.contains(&column)) {
        return Some(format!("the column is named as the kind ({kind})"));
    }
    let kind_words = words(kind);
    let column_words = words(column);
    let within = |part: &[String], whole: &[String]| part.iter().all(|w| whole.contains(w));
    if within(&column_words, &kind_words)
        && words(table_name).iter().any(|w| kind_words.contains(w))
    {
        return Some(format!("{table_name}.{column} names the kind ({kind})"));
    }
    if kind_words.len() > 1 && within(&kind_words, &column_words) {
        return Some(format!("{column} holds the kind's name ({kind})"));
    }
    None
}

/// Why `candidate` is proposed, from what reading its column found against the `held`
/// distinct identities of its kind (read from `where_held`); `None` when it is not.
fn evidence(
    reading: &Reading<'_>,
    candidate: &Candidate,
    from: &Hashed,
    held: usize,
    where_held: &[String],
) -> Option<String> {
    let smaller = from.distinct.min(held);
    // Small integers are in every id column: for an integer column the names must agree.
    let most = !from.integer && from.common * 2 >= smaller && smaller > 0;
    if from.common == 0 || (candidate.names.is_none() && !most) {
        return None;
    }
    Some(format!(
        "{}{} of {} distinct values read from {} are among the {held} distinct {} \
         identities read from {} (compared as keyed hashes in memory, never kept)",
        candidate
            .names
            .as_ref()
            .map(|n| format!("names: {n}; "))
            .unwrap_or_default(),
        from.common,
        from.distinct,
        reading.name(&candidate.from),
        candidate.from.kind,
        where_held.join(", ")
    ))
}

/// Reads columns of one source and hashes their values.
struct Hashing<'a> {
    config: &'a Config,
    source: &'a SourceConfig,
    reads: &'a [Read],
    scan: u32,
    statement_timeout: Duration,
    key: &'a std::collections::hash_map::RandomState,
    against: Option<&'a HashSet<u64>>,
}

impl WithStore for Hashing<'_> {
    type Output = Result<Vec<Option<Hashed>>, DbError>;

    async fn with<S: Backend>(self, store: &S) -> Self::Output {
        let mut snapshot = store.discovery(self.statement_timeout, None).await?;
        let tables = snapshot.tables(&Filter::default()).await?;
        let mut out = Vec::with_capacity(self.reads.len());
        for read in self.reads {
            out.push(self.hash(&mut snapshot, &tables, read).await);
        }
        snapshot.end().await?;
        Ok(out)
    }
}

impl Hashing<'_> {
    /// The keyed hashes of the distinct values of one column, normalised as its kind says;
    /// `None` when it could not be read (a timeout, a permission) or holds other types.
    async fn hash<D: DiscoverySnapshot>(
        &self,
        snapshot: &mut D,
        tables: &[Table],
        read: &Read,
    ) -> Option<Hashed> {
        let name = QualifiedName::parse(&read.table)?;
        let table = tables.iter().find(|t| t.name == name)?;
        let column: &Column = table.column(&read.column)?;
        if !(column.is_integer() || column.is_text()) || !table.readable {
            return None;
        }
        let one = Table {
            columns: vec![column.clone()],
            ..table.clone()
        };
        // As a value of the kind is normalised when a link is followed: by the settings of a
        // source that declares it (this one, for its own identity columns).
        let normalizer = std::iter::once(self.source)
            .chain(self.config.sources.iter())
            .find(|s| s.identity_kinds.contains(&read.kind))?
            .normalizer(&read.kind);
        let limits = SampleLimits {
            json_bytes: 0,
            text_chars: crate::engine::MAX_IDENTITY_BYTES,
            prefix_chars: 64,
        };
        let mut hashes = HashSet::new();
        let mut each = |row: &[Option<&str>]| {
            if let Some(Some(value)) = row.first()
                && let Ok(value) = normalizer.apply(value)
                && !value.is_empty()
            {
                hashes.insert(self.key.hash_one(&value));
            }
        };
        snapshot
            .sample(&one, self.scan, limits, &mut each)
            .await
            .ok()?;
        let distinct = hashes.len();
        let common = self
            .against
            .map(|held| hashes.intersection(held).count())
            .unwrap_or(0);
        if self.against.is_some() {
            hashes = HashSet::new();
        }
        Some(Hashed {
            set: hashes,
            distinct,
            common,
            integer: column.is_integer(),
        })
    }
}

/// The proposals as TOML: each `[[links]]` with its evidence as a comment; one the config has
/// already is shown as a comment only.
pub fn render(proposals: &[LinkProposal]) -> String {
    let mut out = String::from(
        "# Links proposed by dsr-connector discover-links, from names, types and values the\n\
         # sources have in common. Check each before you add it to the config: a link asks\n\
         # other sources with values read from a person's own rows.\n",
    );
    if proposals.is_empty() {
        out.push_str("# (none found)\n");
    }
    for p in proposals {
        let block = format!(
            "[[links]]\nfrom = {{ source = {}, table = {}, column = {} }}\nkind = {}\n",
            toml_string(&p.source),
            toml_string(&p.table),
            toml_string(&p.column),
            toml_string(&p.kind)
        );
        out.push('\n');
        let mut line = String::from("#");
        for word in p.evidence.split_whitespace() {
            if line.len() + 1 + word.len() > 96 && line.len() > 1 {
                out.push_str(&line);
                out.push('\n');
                line = String::from("#");
            }
            line.push(' ');
            line.push_str(word);
        }
        out.push_str(&line);
        out.push('\n');
        if p.configured {
            out.push_str("# (configured already)\n");
            for line in block.lines() {
                out.push_str(&format!("# {line}\n"));
            }
        } else {
            out.push_str(&block);
        }
    }
    out
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    toml_edit::Value::from(text).decorated("", "").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_agree_as_a_person_would_read_them() {
        let agree = |table, column, kind| names_agree(table, column, kind, &[]).is_some();
        assert!(agree("customers", "id", "shop_customer_id"));
        assert!(agree("crm_contacts", "shop_customer_id", "customer_id"));
        assert!(agree("users", "device_id", "device_id"));
        assert!(agree("billing.accounts", "id", "account_id"));
        assert!(!agree("crm_contacts", "id", "customer_id"));
        assert!(!agree("customers", "loyalty_points", "shop_customer_id"));
        assert!(!agree("orders", "id", "customer_id"));
        assert!(names_agree("people", "msisdn", "phone", &["msisdn"]).is_some());
        assert!(names_agree("people", "id", "customer_id", &["id"]).is_none());
    }

    #[test]
    fn words_drop_a_plurals_s() {
        assert_eq!(words("Customers"), ["customer"]);
        assert_eq!(words("shop_customer_id"), ["shop", "customer", "id"]);
        assert_eq!(words("address"), ["address"]);
    }
}
