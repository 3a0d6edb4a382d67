//! The client-side commands of the `dsr-connector` binary: [`extract`] calls a running
//! server and writes a data package for people; [`discover`] drafts a source's data map from
//! its database and writes it into a config.

pub mod discover;
pub mod extract;
