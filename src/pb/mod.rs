//! The `dsr.v1` protobuf package: the generated messages, client and server, and the frames
//! the Extract stream sends.

#[allow(clippy::all, missing_docs)]
mod generated {
    tonic::include_proto!("dsr.v1");
    // The server, generated on its own: its Extract stream sends `ExtractFrame`s.
    include!(concat!(env!("OUT_DIR"), "/server/dsr.v1.rs"));
}

mod frame;

pub use frame::{BatchRows, EncodedBatch, ExtractFrame, RowBuf, TextField};
pub use generated::*;
