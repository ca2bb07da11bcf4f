//! What `cargo xtask dist` writes: the man pages (`clap_mangen`) and shell completions
//! (`clap_complete`: bash, zsh, fish) of `zerocopy-server` and `proxyctl`, rendered from their
//! `clap` definitions — never edited by hand. `tests/current.rs` fails when the files in
//! `dist/` differ from what the definitions render now.

use std::path::PathBuf;

use clap::CommandFactory;
use clap_complete::Shell;

/// Every generated file: its path under the workspace root, and its bytes.
pub fn render() -> std::io::Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut out = Vec::new();
    for cmd in [
        zerocopy_server::cli::Args::command(),
        proxyctl::args::Args::command(),
    ] {
        let name = cmd.get_name().to_string();
        man_pages(cmd.clone(), &name, &name, &mut out)?;
        for (shell, file) in [
            (Shell::Bash, format!("dist/completions/bash/{name}")),
            (Shell::Zsh, format!("dist/completions/zsh/_{name}")),
            (Shell::Fish, format!("dist/completions/fish/{name}.fish")),
        ] {
            let mut bytes = Vec::new();
            clap_complete::generate(shell, &mut cmd.clone(), &name, &mut bytes);
            out.push((PathBuf::from(file), bytes));
        }
    }
    Ok(out)
}

/// `NAME.1`, and one page per subcommand (`proxyctl-reload.1`, whose synopsis says
/// `proxyctl reload`), as git does.
fn man_pages(
    cmd: clap::Command,
    page: &str,
    invoked: &str,
    out: &mut Vec<(PathBuf, Vec<u8>)>,
) -> std::io::Result<()> {
    // The date stays out: the pages change only when the definitions do.
    let cmd = cmd.name(page.to_string()).bin_name(invoked.to_string());
    let mut bytes = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .section("1")
        .manual("zerocopy-server manual")
        .source(format!("zerocopy-server {}", env!("CARGO_PKG_VERSION")))
        .render(&mut bytes)?;
    out.push((PathBuf::from(format!("dist/man/{page}.1")), bytes));
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" || sub.is_hide_set() {
            continue;
        }
        let name = sub.get_name();
        man_pages(
            sub.clone(),
            &format!("{page}-{name}"),
            &format!("{invoked} {name}"),
            out,
        )?;
    }
    Ok(())
}

/// The workspace root (where `dist/` is).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), PathBuf::from)
}
