//! `dsr-connector discover`: drafts the data map of a configured source and writes the config
//! with the draft in place of the source's tables. `dsr-connector discover-links` proposes
//! links between the configured sources.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::config::Config;
use crate::engine::discover::{
    DEFAULT_SAMPLE, DEFAULT_STATEMENT_TIMEOUT, Filter, MAX_SAMPLE, Options, links, render,
};

/// Arguments of `dsr-connector discover`.
#[derive(Debug, clap::Args)]
pub struct DiscoverArgs {
    /// The config file: the source's connection settings are read from it, and the draft is
    /// that file with the source's tables replaced.
    #[arg(long, short)]
    pub config: PathBuf,
    /// The source whose database is read.
    #[arg(long)]
    pub source: String,
    /// Rows sampled per table (0 reads the catalog only).
    #[arg(long, default_value_t = DEFAULT_SAMPLE,
          value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_SAMPLE)))]
    pub sample: u32,
    /// A schema to read (repeatable); without it, every schema but PostgreSQL's own.
    #[arg(long = "schema")]
    pub schemas: Vec<String>,
    /// A table to leave out: `table` or `schema.table`, `*` matching any characters
    /// (repeatable).
    #[arg(long = "exclude")]
    pub exclude: Vec<String>,
    /// How long one sampling statement may run before it is cancelled.
    #[arg(long, default_value = "10s", value_parser = humantime_serde::re::humantime::parse_duration)]
    pub statement_timeout: Duration,
    /// The share of a text column's samples (0 to 1) in which personal data must be found
    /// inside the text for the column to be proposed as free text; 0 means any sample.
    #[arg(long, default_value_t = 0.0, value_parser = share)]
    pub free_text_share: f64,
    /// Where to write the draft config; it must not exist. Without it, standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Runs the command.
pub async fn run(args: DiscoverArgs) -> anyhow::Result<()> {
    if let Some(out) = &args.out
        && out.exists()
    {
        bail!(
            "{} exists: discover writes a new file and never replaces one",
            out.display()
        );
    }
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    let config = Config::load_for_discovery(&args.config, &args.source)?;
    let source = config
        .sources
        .iter()
        .find(|s| s.name == args.source)
        .context("the source vanished from the config")?;
    let options = Options {
        sample: args.sample,
        filter: Filter {
            schemas: args.schemas.clone(),
            exclude: args.exclude.clone(),
        },
        statement_timeout: if args.statement_timeout.is_zero() {
            DEFAULT_STATEMENT_TIMEOUT
        } else {
            args.statement_timeout
        },
        free_text_share: args.free_text_share,
    };
    let store = crate::store::SourceStore::open(source).map_err(anyhow::Error::msg)?;
    let matrix = config.matrix();
    let drafted = store
        .with(crate::engine::discover::Drafting {
            source,
            matrix: &matrix,
            options: &options,
            deadline: None,
        })
        .await;
    store.close().await;
    let proposal = drafted?;
    let draft = render::into_config(&text, &args.source, &proposal)?;
    match &args.out {
        Some(out) => {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(out)
                .with_context(|| format!("creating {}", out.display()))?;
            file.write_all(draft.as_bytes())?;
            file.sync_all()?;
        }
        None => print!("{draft}"),
    }
    let identities: usize = proposal.tables.iter().map(|t| t.identities.len()).sum();
    let references: usize = proposal.tables.iter().map(|t| t.references.len()).sum();
    let inferred: usize = proposal
        .tables
        .iter()
        .flat_map(|t| &t.references)
        .filter(|r| r.inferred)
        .count();
    let columns = || proposal.tables.iter().flat_map(|t| &t.columns);
    let undecided = columns()
        .filter(|c| c.category == crate::classify::CHECK)
        .count();
    let unchecked = columns()
        .filter(|c| c.no_evidence)
        .count()
        .saturating_sub(undecided);
    eprintln!(
        "discover: {} table(s) drafted with {identities} identity column(s) and {references} \
         reference(s) ({inferred} inferred, check them); {undecided} text column(s) without \
         evidence either way marked \"check\" (check-config refuses the draft until a person \
         decides each); {unchecked} other column(s) without evidence marked not_pii (check \
         them); {} table(s) no identity reaches",
        proposal.tables.len(),
        proposal.unreachable.len()
    );
    if !proposal.kinds_without_identity.is_empty() {
        eprintln!(
            "discover: no column found for identity kind(s) {}: check-config will refuse the \
             draft until each has one",
            proposal.kinds_without_identity.join(", ")
        );
    }
    if let Some(out) = &args.out {
        eprintln!(
            "discover: wrote {}; check it with: dsr-connector check-config {}",
            out.display(),
            out.display()
        );
    }
    Ok(())
}

/// A share between 0 and 1.
fn share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(share) if (0.0..=1.0).contains(&share) => Ok(share),
        _ => Err(format!("'{text}' is not a share between 0 and 1")),
    }
}

/// Arguments of `dsr-connector discover-links`.
#[derive(Debug, clap::Args)]
pub struct DiscoverLinksArgs {
    /// The config file, with every source and its data map.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Rows read per column, in each source's sampling order.
    #[arg(long, default_value_t = links::DEFAULT_SCAN,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(links::MAX_SCAN)))]
    pub scan: u32,
    /// How long one reading statement may run before it is cancelled.
    #[arg(long, default_value = "30s", value_parser = humantime_serde::re::humantime::parse_duration)]
    pub statement_timeout: Duration,
}

/// Runs `discover-links`: prints the proposed `[[links]]`, each with its evidence as a
/// comment, for a person to check and copy into the config.
pub async fn run_links(args: DiscoverLinksArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    let timeout = if args.statement_timeout.is_zero() {
        DEFAULT_STATEMENT_TIMEOUT
    } else {
        args.statement_timeout
    };
    let proposals = links::propose(&config, args.scan, timeout)
        .await
        .map_err(anyhow::Error::msg)?;
    print!("{}", links::render(&proposals));
    let new = proposals.iter().filter(|p| !p.configured).count();
    eprintln!(
        "discover-links: {} link(s) proposed ({new} not in the config yet); check each \
         before you add it",
        proposals.len()
    );
    Ok(())
}
