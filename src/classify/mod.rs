//! The classification matrix, value detectors, and the recursive PII scan of nested JSON.
//!
//! A [`Matrix`] maps data categories (`contact.email`, `network.ip`, ...) to key-name patterns
//! and value detectors. Every column of the data map must carry a category of the matrix or
//! `not_pii`; config validation refuses any other. JSON columns marked `scan_json` are walked
//! through objects and arrays: a key whose name matches a category's pattern, or a string value
//! that a category's detector recognises, becomes a PII field with its path
//! (`events.payload.contact.email`, arrays as `[]`).
//!
//! The walker is driven by the parser, one small frame per level, without building a tree; the
//! parser refuses nesting deeper than 128 levels, so a hostile document cannot overflow the
//! thread's stack, and the walker stops at a depth, size and node limit with a
//! [`ScanViolation`]. Hits and violations carry paths and categories, never the values found.
//! An extraction scans a column's documents through one [`ColumnScan`], which keeps each
//! field found once and remembers the categories of the keys it met, bounded by bytes.
//!
//! The room holds [`detect`] (value detectors), [`matrix`] (categories and their patterns),
//! [`scan`] (the JSON walker) and [`mask`] (masking what the scan finds, in place). It imports
//! nothing of the service but its own parts.

mod detect;
mod mask;
mod matrix;
mod names;
mod scan;
#[cfg(test)]
mod tests;

pub use detect::*;
pub use mask::*;
pub use matrix::*;
pub use names::*;
pub use scan::*;

/// The category that marks a column as holding no personal data.
pub const NOT_PII: &str = "not_pii";

/// What `discover` proposes for a text column with no evidence either way: not a category,
/// and refused by `check-config` until a person decides.
pub const CHECK: &str = "check";
