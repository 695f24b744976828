//! Connection shares per principal: no single principal may hold more than
//! `limits.max_connections_per_principal` API connections, and principals
//! with no role at all (unknown to the config, or configured with none)
//! share `limits.max_connections_roleless` between them — a certificate
//! that may do nothing cannot fill the connection cap and lock out
//! `payments`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Counts of open connections by principal.
#[derive(Debug)]
pub struct Shares {
    open: Mutex<HashMap<String, usize>>,
    per_principal: usize,
    roleless: usize,
}

/// The key under which every roleless principal is counted.
const ROLELESS: &str = "";

impl Shares {
    /// Shares with these limits.
    pub fn new(per_principal: usize, roleless: usize) -> Arc<Shares> {
        Arc::new(Shares {
            open: Mutex::new(HashMap::new()),
            per_principal,
            roleless,
        })
    }

    /// Takes a connection for `principal` (counted with every roleless
    /// principal when `has_roles` is false), or `None` if its share is used
    /// up. The share is given back when the returned guard drops.
    pub fn take(self: &Arc<Shares>, principal: &str, has_roles: bool) -> Option<Share> {
        let (key, limit) = if has_roles {
            (principal, self.per_principal)
        } else {
            (ROLELESS, self.roleless)
        };
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(key.to_owned()).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(Share {
            shares: Arc::clone(self),
            key: key.to_owned(),
        })
    }
}

/// One connection's place in its principal's share.
#[derive(Debug)]
pub struct Share {
    shares: Arc<Shares>,
    key: String,
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut open = self.shares.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roleless_principals_share_one_small_bucket() {
        let shares = Shares::new(3, 2);
        let a = shares.take("stranger-1", false);
        let b = shares.take("stranger-2", false);
        assert!(a.is_some() && b.is_some());
        assert!(shares.take("stranger-3", false).is_none());
        // Principals with roles are counted apart, each up to its own limit.
        let held: Vec<_> = (0..3).map(|_| shares.take("payments", true)).collect();
        assert!(held.iter().all(Option::is_some));
        assert!(shares.take("payments", true).is_none());
        assert!(shares.take("cart", true).is_some());
        drop(a);
        assert!(shares.take("stranger-3", false).is_some());
    }
}
