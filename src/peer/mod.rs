//! What a peer sends, parsed with no HTTP, TLS or database types: request
//! bodies ([`body`]), a page watcher's report (`report`) and the name a
//! client certificate gives its holder ([`names`]). Pure, so the fuzz targets reach them; the server reads the
//! bytes and calls these.

pub(crate) mod body;
pub mod names;
pub(crate) mod report;
