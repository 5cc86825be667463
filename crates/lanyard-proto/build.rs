//! Compiles `proto/` with protox (pure Rust), so no `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "spiffe/workload/workload.proto",
        "lanyard/types/v1/entry.proto",
        "lanyard/node/v1/node.proto",
        "lanyard/admin/v1/admin.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let mut compiler = protox::Compiler::new([&root])?;
    compiler
        .include_source_info(true)
        .include_imports(true)
        .open_files(files)?;
    // Published as `FILE_DESCRIPTOR_SET`: what a client in another language
    // (or gRPC reflection) decodes the APIs with.
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("lanyard_descriptors.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    let fds = compiler.file_descriptor_set();
    tonic_prost_build::configure()
        // The agent builds each X.509-SVID answer once and sends it to
        // every caller of its selector set: with `Bytes` fields, each
        // call's copy shares the certificate and key bytes instead of
        // duplicating them.
        .bytes(".X509SVID")
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
