//! `gts-webchat`: parse, set up logging, dispatch. Everything else lives in the library.

fn main() {
    std::process::exit(gts_webchat::cli::main());
}
