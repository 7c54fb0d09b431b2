//! The audit sidecar as its own program: bulkhead's webhook injects it into
//! every pod of a tenant that requires audit, so its memory is paid once per
//! pod. Apart from the operator it links none of the Kubernetes client, the
//! controller or the verifier, and its code pages are a fraction of theirs.

use std::process::ExitCode;

use clap::Parser;

/// The static musl build allocates with mimalloc: musl's own allocator
/// halved the sidecar's sealing rate (`cargo bench --bench sidecar`).
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Seals an application's audit records into a signed hash chain and ships them.
#[derive(Parser)]
#[command(name = "bulkhead-audit-sidecar", version, about)]
struct Cli {
    #[command(flatten)]
    args: bulkhead::audit::cli::SidecarArgs,
}

fn main() -> ExitCode {
    match bulkhead::audit::cli::run_sidecar(Cli::parse().args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
