//! The process's log: `tracing` events formatted as text or JSON lines
//! (`[log] format`, `CARDVAULT_LOG_FORMAT`) on standard error. Every line
//! goes through [`crate::redact`] on its way out, whatever field or message
//! it came from: control characters are escaped, so no text can forge a
//! line, and any digit chain that could be a card number is masked.

use std::io::Write;

use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;

/// The subscriber the log format layer sits on.
type LogBase =
    tracing_subscriber::layer::Layered<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;

/// The formatting layer, swappable once the config names a format.
type FormatLayer = Box<dyn tracing_subscriber::Layer<LogBase> + Send + Sync>;

static LOG_FORMAT: std::sync::OnceLock<tracing_subscriber::reload::Handle<FormatLayer, LogBase>> =
    std::sync::OnceLock::new();

/// Hands each event a buffer that is sanitized and written to standard
/// error in one piece when the event is done.
#[derive(Clone, Copy)]
struct Sanitizing {
    json: bool,
}

/// One event's line on its way to standard error.
struct Line {
    json: bool,
    buf: Vec<u8>,
}

impl<'a> MakeWriter<'a> for Sanitizing {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line {
            json: self.json,
            buf: Vec::with_capacity(256),
        }
    }
}

impl Write for Line {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.buf);
        // The formatter ends each event with one newline; everything
        // before it is the event's own text.
        let (body, newline) = match text.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (&*text, ""),
        };
        let clean = if self.json {
            crate::redact::json_line(body)
        } else {
            crate::redact::text(body)
        };
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(clean.as_bytes());
        let _ = err.write_all(newline.as_bytes());
        zeroize::Zeroize::zeroize(&mut self.buf);
    }
}

fn format_layer(format: LogFormat) -> FormatLayer {
    use tracing_subscriber::Layer as _;
    let layer = tracing_subscriber::fmt::layer();
    match format {
        LogFormat::Json => layer.json().with_writer(Sanitizing { json: true }).boxed(),
        // No ANSI colours: the sanitizer escapes ESC, and a log that a
        // caller's text cannot colour is the point.
        LogFormat::Text => layer
            .with_ansi(false)
            .with_writer(Sanitizing { json: false })
            .boxed(),
    }
}

/// Installs the subscriber (`RUST_LOG`, default `info`).
pub(super) fn init() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let format = LogFormat::from_env().unwrap_or_default();
    let (layer, handle) = tracing_subscriber::reload::Layer::new(format_layer(format));
    if tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .try_init()
        .is_ok()
    {
        let _ = LOG_FORMAT.set(handle);
    }
}

/// Switches the log format once the config has been read (`[log] format`).
pub(crate) fn set_format(format: LogFormat) {
    if let Some(handle) = LOG_FORMAT.get() {
        let _ = handle.reload(format_layer(format));
    }
}
