//! Compiles the protobuf contract with the pure-Rust `protox` compiler, so that building needs
//! no system `protoc`, and writes the descriptor set that server reflection serves.
//!
//! Two passes over the same contract: the messages and the client, then the server alone, whose
//! Extract stream sends `crate::pb::ExtractFrame` (an `ExtractResponse`, or a batch of rows
//! already in `ExtractResponse`'s wire form) instead of `ExtractResponse`; the bytes on the wire
//! are the same.

use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");

    let fds = protox::compile(["dsr/v1/dsr.proto", "dsr/v1/requests.proto"], ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("dsr_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;

    tonic_prost_build::configure()
        // Map fields encode in key order, so that a message's encoding is canonical: the
        // audit log records the SHA-256 of each manifest's encoding.
        .btree_map(".")
        .build_client(true)
        .build_server(false)
        .compile_fds(fds.clone())?;

    let server_dir = out_dir.join("server");
    fs::create_dir_all(&server_dir)?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .out_dir(&server_dir)
        .extern_path(".dsr.v1.ExtractResponse", "crate::pb::ExtractFrame")
        .extern_path(".dsr.v1", "crate::pb")
        .extern_path(".google.longrunning", "crate::pb::google::longrunning")
        .extern_path(".google.rpc", "crate::pb::google::rpc")
        .compile_fds(fds)?;
    Ok(())
}
