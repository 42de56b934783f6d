//! Compiles `proto/marketbridge/**` into Rust with tonic's prost generator.
//! A vendored `protoc` is used unless `PROTOC` points at another one.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "marketbridge/common/v1/common.proto",
    "marketbridge/account/v1/account.proto",
    "marketbridge/provisioning/v1/provisioning.proto",
    "marketbridge/billing/v1/billing.proto",
    "marketbridge/plugin/v1/plugin.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // SAFETY: build scripts are single-threaded; this only informs prost-build.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("PROTOC", protoc);
        }
    }
    let proto_root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let files: Vec<PathBuf> = PROTOS.iter().map(|p| proto_root.join(p)).collect();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    tonic_prost_build::configure()
        // Maps encode in key order, so a request's bytes are a stable fingerprint.
        .btree_map(".")
        // Undecodable requests answer INVALID_ARGUMENT (see `src/codec.rs`).
        .codec_path("crate::codec::ProtoCodec")
        .file_descriptor_set_path(out_dir.join("marketbridge_descriptor.bin"))
        .compile_protos(&files, &[proto_root])?;
    Ok(())
}
