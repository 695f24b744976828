//! The payment pages a watcher reports on (`POST /v1/admin/watch/reports`):
//! at most [`MAX_PAGES`] names, each with its last report, exported as
//! gauges labelled by the page's name — `cardvault_page_unapproved_changes`
//! (differences in its last check), `cardvault_page_last_check_timestamp_seconds`
//! (its last completed check), `cardvault_page_check_interval_seconds` and
//! `cardvault_page_unchecked` (1 while its last attempt could not check it)
//! and `cardvault_page_baseline_unapproved` (1 while the baseline it was
//! last checked against carries no approval the vault signed).
//! The alert rules read them: a change, and a page not checked within
//! twice its interval. In memory: a restart forgets them until the next
//! report.

use std::collections::BTreeSet;
use std::sync::Mutex;

use crate::peer::report::{Outcome, WatchReport};

/// Most distinct pages (a bound on the metrics' label values).
pub const MAX_PAGES: usize = 64;

/// The pages seen so far.
#[derive(Default)]
pub struct WatchedPages {
    names: Mutex<BTreeSet<String>>,
}

/// Why a report was not recorded.
#[derive(Debug, PartialEq, Eq)]
pub struct TooManyPages;

impl WatchedPages {
    /// Records `report` (validated) made at `now_s` (seconds since the
    /// epoch) in the gauges, with whether its baseline is approved (`None`:
    /// not checked, so unknown); a new page beyond [`MAX_PAGES`] is refused.
    pub fn record(
        &self,
        report: &WatchReport,
        baseline_approved: Option<bool>,
        now_s: f64,
    ) -> Result<(), TooManyPages> {
        {
            let mut names = self.names.lock().map_err(|_| TooManyPages)?;
            if !names.contains(&report.page) {
                if names.len() >= MAX_PAGES {
                    return Err(TooManyPages);
                }
                names.insert(report.page.clone());
            }
        }
        let page = report.page.clone();
        if let Some(approved) = baseline_approved {
            metrics::gauge!("cardvault_page_baseline_unapproved", "page" => page.clone())
                .set(if approved { 0.0 } else { 1.0 });
        }
        metrics::gauge!("cardvault_page_check_interval_seconds", "page" => page.clone())
            .set(report.interval_s as f64);
        match report.outcome {
            Outcome::Unchecked => {
                metrics::gauge!("cardvault_page_unchecked", "page" => page).set(1.0);
            }
            Outcome::Matches | Outcome::Changed => {
                metrics::gauge!("cardvault_page_unchecked", "page" => page.clone()).set(0.0);
                metrics::gauge!("cardvault_page_unapproved_changes", "page" => page.clone())
                    .set(report.differences.len() as f64);
                metrics::gauge!("cardvault_page_last_check_timestamp_seconds", "page" => page)
                    .set(now_s);
            }
        }
        Ok(())
    }
}
