//! Entry point: PID 1 runs the initramfs agent, anything else the operator's CLI.

fn main() {
    if std::process::id() == 1 {
        bootenv::pid1::main();
    }
    std::process::exit(bootenv::cli::main());
}
