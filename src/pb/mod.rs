//! The `dsr.v1` protobuf package: the generated messages, client and server, and the frames
//! the Extract stream sends.

#[allow(clippy::all, missing_docs)]
mod generated {
    pub mod dsr {
        pub mod v1 {
            tonic::include_proto!("dsr.v1");
            // The server, generated on its own: its Extract stream sends `ExtractFrame`s.
            include!(concat!(env!("OUT_DIR"), "/server/dsr.v1.rs"));
        }
    }
    pub mod google {
        /// `google.longrunning`: the Operations service that durable requests are served by.
        pub mod longrunning {
            tonic::include_proto!("google.longrunning");
            include!(concat!(env!("OUT_DIR"), "/server/google.longrunning.rs"));
        }
        /// `google.rpc.Status`: an operation's error.
        pub mod rpc {
            tonic::include_proto!("google.rpc");
        }
    }
}

mod frame;

pub use frame::{BatchRows, EncodedBatch, ExtractFrame, RowBuf, TextField};
pub use generated::dsr::v1::*;
pub use generated::google;
