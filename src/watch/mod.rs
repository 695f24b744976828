//! The payment-page watch (PCI DSS 6.4.3 and 11.6.1): `cardvault watch`
//! loads a payment page in headless Chromium (`browser`), takes the
//! inventory of what the browser received and ran (`inventory`), and
//! compares it with an approved, justified baseline (`baseline`, `diff`),
//! naming every difference; `runner` checks pages at their intervals and
//! reports to the vault. Without a browser, `http_only` fetches the page
//! and reads its markup (`crate::peer::markup`), and says what it cannot see. It runs as its own process, with no access to
//! the vault's KEK, data or audit key.

mod baseline;
mod browser;
mod diff;
mod http_only;
mod inventory;
mod runner;

pub use baseline::{read as read_baseline, render as render_baseline};
pub use browser::{BrowserSettings, Budget, WatchError, check_page};
pub use diff::compare;
pub use http_only::{BLIND_SPOTS, check_page_http_only, compare_static};
pub use inventory::{Inventory, origin_of};
pub use runner::{
    approval_path, browser_kept_from_key, read_approvals, read_run_config, run_pages,
};
