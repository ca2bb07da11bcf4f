//! The man pages and completions in `dist/` are what the `clap` definitions render now: a
//! changed option without `cargo xtask dist` fails here.

use std::collections::BTreeSet;

#[test]
fn dist_files_are_current() {
    let root = xtask::root();
    let files = xtask::render().expect("render");
    let mut stale = Vec::new();
    for (path, bytes) in &files {
        match std::fs::read(root.join(path)) {
            Ok(on_disk) if &on_disk == bytes => {}
            Ok(_) => stale.push(format!("{} differs", path.display())),
            Err(e) => stale.push(format!("{}: {e}", path.display())),
        }
    }
    // And no page of a command that is gone.
    let expected: BTreeSet<_> = files.iter().map(|(p, _)| root.join(p)).collect();
    for dir in [
        "dist/man",
        "dist/completions/bash",
        "dist/completions/zsh",
        "dist/completions/fish",
    ] {
        for entry in std::fs::read_dir(root.join(dir))
            .into_iter()
            .flatten()
            .flatten()
        {
            if !expected.contains(&entry.path()) {
                stale.push(format!(
                    "{} is not generated any more",
                    entry.path().display()
                ));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "dist/ is stale; run `cargo xtask dist` and commit the result:\n{}",
        stale.join("\n")
    );
    // Both binaries, each with a page and three shells' completions.
    for name in ["zerocopy-server", "proxyctl"] {
        for p in [
            format!("dist/man/{name}.1"),
            format!("dist/completions/bash/{name}"),
            format!("dist/completions/zsh/_{name}"),
            format!("dist/completions/fish/{name}.fish"),
        ] {
            assert!(
                files.iter().any(|(f, _)| f.to_str() == Some(p.as_str())),
                "{p}"
            );
        }
    }
    assert!(files
        .iter()
        .any(|(f, _)| f.ends_with("dist/man/proxyctl-reload.1")));
}
