//! The `heldlock` command. (The lock commands arrive with the CLI work.)

fn main() {
    eprintln!("heldlock: the lock commands are not built yet; see the README");
    std::process::exit(64);
}
