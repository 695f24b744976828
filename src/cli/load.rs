//! `cardvault load`: drives a running vault over mTLS and reports latency;
//! `load verify` checks an ack log against it; `load ceiling` measures this
//! machine's raw RocksDB synced-batch rate for comparison.

use anyhow::Context;

use super::error::CliResult;
use crate::load::{LoadArgs, LoadCommand};

/// Runs `load` (or one of its subcommands).
pub async fn run(args: LoadArgs) -> CliResult {
    match &args.command {
        Some(LoadCommand::Verify {
            target,
            ack_log,
            retokenize,
            json,
        }) => {
            target.validate()?;
            let report = crate::load::verify(target, ack_log, *retokenize).await?;
            if *json {
                say!("{}", serde_json::to_string(&report).context("report")?);
            } else {
                say!(
                    "ack log {}: {} entries, {} verified, {} lost, {} mismatched, {} unreadable; {} tokenized again, {} given another token",
                    ack_log.display(),
                    report.entries,
                    report.verified,
                    report.lost,
                    report.mismatched,
                    report.errors,
                    report.retokenized,
                    report.second_tokens
                );
            }
            if report.lost != 0
                || report.mismatched != 0
                || report.errors != 0
                || report.second_tokens != 0
            {
                return Err(anyhow::anyhow!("acknowledged tokens were lost or changed").into());
            }
            Ok(())
        }
        Some(LoadCommand::Ceiling {
            dir,
            groups,
            duration,
        }) => {
            for (i, group) in groups.iter().enumerate() {
                let scratch = dir.join(format!("ceiling-{i}-{group}"));
                std::fs::create_dir_all(&scratch).context("creating the scratch directory")?;
                let (scratch2, group, duration) = (scratch.clone(), *group, *duration);
                let ceiling = tokio::task::spawn_blocking(move || {
                    crate::store::rocksdb::ceiling::measure(&scratch2, group, duration)
                })
                .await
                .context("ceiling task")?
                .context("measuring the ceiling")?;
                std::fs::remove_dir_all(&scratch).context("removing the scratch directory")?;
                say!("{}", serde_json::to_string(&ceiling).context("report")?);
            }
            Ok(())
        }
        None => {
            args.validate()?;
            let json = args.json;
            let report = crate::load::run(args).await?;
            if json {
                say!("{}", serde_json::to_string(&report).context("report")?);
            } else {
                say_raw!("{report}");
            }
            if report.ops == 0 {
                return Err(anyhow::anyhow!("no request succeeded").into());
            }
            let broken: u64 = report
                .errors
                .iter()
                .filter(|(key, _)| key.starts_with("connect"))
                .map(|(_, n)| n)
                .sum();
            if broken > 0 {
                return Err(anyhow::anyhow!(
                    "{broken} exchanges failed on the connection (did the vault go away?); see the errors in the report"
                )
                .into());
            }
            Ok(())
        }
    }
}
