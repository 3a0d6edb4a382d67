//! Compiles the protobuf contract with the pure-Rust `protox` compiler, so that building needs
//! no system `protoc`, and writes the descriptor set that server reflection serves.

use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");

    let fds = protox::compile(["dsr/v1/dsr.proto"], ["proto"])?;
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
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
