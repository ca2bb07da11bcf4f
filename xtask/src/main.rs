//! `cargo xtask dist`: (re)writes the generated man pages and completions in `dist/`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let task = std::env::args().nth(1);
    if task.as_deref() != Some("dist") {
        eprintln!("usage: cargo xtask dist   (writes dist/man and dist/completions)");
        return ExitCode::from(2);
    }
    let root = xtask::root();
    let files = match xtask::render() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("xtask: rendering failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Pages of subcommands that no longer exist go too.
    for dir in ["dist/man", "dist/completions"] {
        let _ = std::fs::remove_dir_all(root.join(dir));
    }
    for (path, bytes) in files {
        let path = root.join(path);
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, bytes));
        if let Err(e) = written {
            eprintln!("xtask: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("{}", path.display());
    }
    ExitCode::SUCCESS
}
