//! The `specblock` command line.

fn main() {
    eprintln!("specblock: no command yet");
    std::process::exit(2);
}
