//! `tidings suppressions list|add|remove|check`: the suppression list as an
//! operator sees it. Addresses are taken in any case and spacing, and
//! listed in one form (see `tidings_core::suppression::normalize`).

use crate::cli::SuppressionsCommand;
use crate::fleet;
use std::process::ExitCode;
use std::sync::Arc;
use tidings_core::redact::printable;
use tidings_core::suppression::{normalize, Cause, Suppression};
use tidings_core::Config;

pub async fn run(command: SuppressionsCommand, config: Arc<Config>) -> anyhow::Result<ExitCode> {
    let store = fleet::open_store(&config).await?;
    match command {
        SuppressionsCommand::List { json } => {
            let mut cursor = 0;
            loop {
                let (next, page) = store.suppressions(cursor).await?;
                for e in page {
                    if json {
                        println!("{}", serde_json::to_string(&e)?);
                    } else {
                        println!("{}", row(&e));
                    }
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        SuppressionsCommand::Add { address, reason } => {
            let (channel, address) = listed(&address)?;
            let at = chrono::Utc::now();
            let entry = Suppression { address, channel, cause: Cause::Manual, reason, source: "cli".into(), at };
            // An operator's entry replaces any other.
            store.suppress(&entry).await?;
            println!("listed {}", entry.address);
        }
        SuppressionsCommand::Remove { address } => {
            let (_, address) = listed(&address)?;
            if !store.unsuppress(&address).await? {
                eprintln!("{address} was not listed");
                return Ok(ExitCode::FAILURE);
            }
            println!("removed {address}");
        }
        SuppressionsCommand::Check { address } => {
            let (_, address) = listed(&address)?;
            match store.suppression(&address).await? {
                Some(e) => println!("{}", row(&e)),
                None => {
                    println!("{address}\tnot listed");
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn listed(address: &str) -> anyhow::Result<(tidings_core::Channel, String)> {
    normalize(address)
        .ok_or_else(|| anyhow::anyhow!("`{address}` is neither an email address nor an E.164 phone number"))
}

/// One line an entry; what a provider or an operator wrote (an entry made
/// before callbacks were cleaned, say) has its control characters as text,
/// so no entry moves the terminal or forges a line.
fn row(e: &Suppression) -> String {
    let (address, source, reason) = (printable(&e.address), printable(&e.source), printable(&e.reason));
    format!("{address}\t{}\t{}\t{source}\t{}\t{reason}", e.channel, e.cause.as_str(), e.at.to_rfc3339())
}
