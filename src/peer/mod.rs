//! What a peer sends, parsed with no HTTP, TLS or database types: request
//! bodies ([`body`]), a page watcher's report (`report`), a payment page's
//! markup as a plain client reads it (`markup`) and the name a
//! client certificate gives its holder ([`names`]). Pure, so the fuzz targets reach them; the server reads the
//! bytes and calls these.

pub(crate) mod body;
pub(crate) mod markup;
pub mod names;
pub(crate) mod report;
