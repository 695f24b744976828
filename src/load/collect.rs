//! `--op collect-submit`: the hosted fields' card path under load. Before
//! the clock starts, `--sessions N` collection sessions are created over
//! mTLS and each is framed once on the public listener (its nonce read
//! from the frame's HTML), by `--concurrency` tasks; each measured request
//! then submits one synthetic card into one of them with the headers a
//! browser sends (`Origin`, `Sec-Fetch-Site: same-origin`).

use std::net::SocketAddr;
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use hyper::Method;
use serde_json::json;

use super::TargetArgs;
use super::pans::PanGenerator;
use crate::client::{ClientTls, Connection, Reply};

/// The public listener and the prepared sessions.
pub(super) struct Public {
    pub(super) tls: ClientTls,
    pub(super) addr: SocketAddr,
    origin: String,
    /// (session, frame nonce), taken one per submit.
    sessions: Mutex<Vec<(String, String)>>,
}

/// The page origin the sessions are made for (never loaded: the submits
/// come from this tool).
const PAGE_ORIGIN: &str = "https://shop.example";

impl Public {
    /// The listener at `url`, trusted with the target's CA.
    pub(super) async fn new(target: &TargetArgs, url: &str) -> Result<Public> {
        let ca = match (&target.dev, &target.ca) {
            (Some(dir), _) => dir.join("pki/ca.pem"),
            (None, Some(ca)) => ca.clone(),
            _ => bail!("give --dev DIR, or --ca"),
        };
        let tls = ClientTls::from_files(&ca, None, false)?;
        let origin = url.trim_end_matches('/').to_owned();
        let addr = crate::client::resolve_https(&origin)
            .await
            .context("--collect")?;
        Ok(Public {
            tls,
            addr,
            origin,
            sessions: Mutex::new(Vec::new()),
        })
    }

    fn take(&self) -> Option<(String, String)> {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
    }
}

/// Creates and frames `count` sessions with `tasks` tasks, each on its own
/// mTLS (`api`) and public connection.
pub(super) async fn prefill(
    public: &Public,
    api: (&ClientTls, SocketAddr),
    count: usize,
    tasks: usize,
) -> Result<()> {
    let tasks = tasks.clamp(1, 64).min(count);
    let per_task = count.div_ceil(tasks);
    let mut jobs = Vec::with_capacity(tasks);
    for _ in 0..tasks {
        jobs.push(async move {
            let mut vault = api.0.connect(api.1).await.context("the mTLS API")?;
            let mut frames = public
                .tls
                .connect(public.addr)
                .await
                .context("the public listener")?;
            let mut made = Vec::with_capacity(per_task);
            for _ in 0..per_task {
                made.push(one_session(&mut vault, &mut frames).await?);
            }
            public
                .sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(made);
            Ok::<_, anyhow::Error>(())
        });
    }
    for result in futures_util::future::join_all(jobs).await {
        result?;
    }
    Ok(())
}

/// One session and its frame's nonce.
async fn one_session(vault: &mut Connection, frames: &mut Connection) -> Result<(String, String)> {
    let reply = vault
        .post_json(
            "/v1/collect/sessions",
            &json!({"origin": PAGE_ORIGIN, "ttl_s": 3600, "cvc": "required"}),
        )
        .await?;
    if reply.status != hyper::StatusCode::CREATED {
        bail!(
            "creating a collection session: {} {}",
            reply.status,
            reply.json()["error"]["code"]
        );
    }
    let session = reply.json()["session"]
        .as_str()
        .context("no session in the answer")?
        .to_owned();
    let frame = frames.get(&format!("/collect/v1/frame/{session}")).await?;
    let html = String::from_utf8_lossy(&frame.body);
    let nonce = html
        .split("data-nonce=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .filter(|n| !n.is_empty())
        .context("the frame carries no nonce")?
        .to_owned();
    Ok((session, nonce))
}

/// One measured submit; `None` when no prepared session is left.
pub(super) async fn submit(
    public: &Public,
    conn: &mut Connection,
    generator: &mut PanGenerator,
) -> Option<Result<Reply, crate::client::ClientError>> {
    let (session, nonce) = public.take()?;
    let body =
        json!({"nonce": nonce, "number": generator.next_pan(), "expiry": "12/30", "code": "123"});
    Some(
        conn.send_with(
            Method::POST,
            &format!("/collect/v1/sessions/{session}/submit"),
            &[
                ("origin", public.origin.as_str()),
                ("sec-fetch-site", "same-origin"),
            ],
            Some(("application/json", body.to_string().into_bytes())),
        )
        .await,
    )
}
