//! The man pages and shell completions of `bootenv`, generated from its clap definition
//! ([`bootenv::cli::Cli`]), so that they cannot drift from `bootenv --help`.

use clap::CommandFactory;
use clap_complete::Shell;
use std::path::{Path, PathBuf};

/// What [`generate`] wrote.
pub struct Docs {
    /// bootenv.8 and one page per verb (bootenv-list.8, …).
    pub man: Vec<PathBuf>,
    /// bash, zsh and fish completions.
    pub completions: Vec<PathBuf>,
}

/// Writes the man pages to `out/man` and the completions to `out/completions`.
pub fn generate(out: &Path) -> anyhow::Result<Docs> {
    let man_dir = out.join("man");
    let comp_dir = out.join("completions");
    for d in [&man_dir, &comp_dir] {
        if d.exists() {
            std::fs::remove_dir_all(d)?;
        }
        std::fs::create_dir_all(d)?;
    }
    let cmd = bootenv::cli::Cli::command();
    // Section 8: bootenv is a system administration command (/usr/sbin).
    fn pages(cmd: clap::Command, dir: &Path) -> std::io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
            pages(sub, dir)?;
        }
        clap_mangen::Man::new(cmd).section("8").generate_to(dir)?;
        Ok(())
    }
    let mut built = cmd.clone().disable_help_subcommand(true);
    built.build();
    pages(built, &man_dir)?;
    let mut completions = Vec::new();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut c = cmd.clone();
        completions.push(clap_complete::generate_to(
            shell, &mut c, "bootenv", &comp_dir,
        )?);
    }
    let mut man: Vec<PathBuf> = std::fs::read_dir(&man_dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    man.sort();
    Ok(Docs { man, completions })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn every_verb_has_a_man_page_and_completions() {
        let dir = tempfile::tempdir().unwrap();
        let docs = super::generate(dir.path()).unwrap();
        let cmd = bootenv::cli::Cli::command();
        // roff writes '-' as '\\-'.
        let read = |p: &std::path::Path| {
            std::fs::read_to_string(p).map(|t| t.replace("\\-", "-").replace("\\*(Aq", "'"))
        };
        let main = read(&dir.path().join("man/bootenv.8")).unwrap();
        assert!(
            main.contains("EXIT STATUS") || main.contains("Exit status"),
            "the exit codes are not documented"
        );
        let bash = std::fs::read_to_string(&docs.completions[0]).unwrap();
        let verbs: Vec<_> = cmd
            .get_subcommands()
            .filter(|s| s.get_name() != "help" && !s.is_hide_set())
            .collect();
        assert!(verbs.len() >= 20, "{} verbs", verbs.len());
        for v in verbs {
            let name = v.get_name();
            let page = dir.path().join(format!("man/bootenv-{name}.8"));
            let text = read(&page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
            let about = v
                .get_about()
                .expect("every verb says what it does")
                .to_string();
            let first = about
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ");
            assert!(
                text.replace('\n', " ").contains(&first),
                "bootenv-{name}.8 lacks {first:?}"
            );
            assert!(main.contains(name), "bootenv.8 does not list {name}");
            assert!(
                bash.contains(name),
                "the bash completion does not know {name}"
            );
        }
    }
}
