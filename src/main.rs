use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Ferry: roll ML model versions out without downtime.
#[derive(Parser)]
#[command(name = "ferry", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions, or write them into a directory.
    Crd {
        /// Write one file per CRD into this directory instead of printing them.
        #[arg(long)]
        output_dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crd { output_dir } => write_crds(output_dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ferry: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn write_crds(output_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let files = ferry::crd::files()?;
    match output_dir {
        None => {
            for file in files {
                print!("---\n{}", file.yaml);
            }
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir)?;
            for file in files {
                let path = dir.join(&file.file_name);
                std::fs::write(&path, file.yaml)?;
                eprintln!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}
