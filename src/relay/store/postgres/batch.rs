//! Direct messages without files, stored many to a transaction.
//!
//! Under load PostgreSQL's cost per message is mostly per statement and per commit (each a
//! round trip and an executor run, and the commit's NOTIFY lock serializes notifying commits),
//! so sends that arrive together share them: a few workers each take what is queued, store it
//! with one statement per step (recipients, peers, messages, voice jobs, positions,
//! deliveries, NOTIFY) and commit once. Each send still gets its own answer: an unknown
//! recipient fails only its own send, and a batch that fails as a whole is stored again one
//! message per transaction, so an error names the send that caused it.

use std::collections::HashMap;
use std::sync::Arc;

use deadpool_postgres::GenericClient;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::{Conns, Pending, RowExt, TRIES, execute, messages, pg, query, retryable, voice};
use crate::api::Kind;
use crate::relay::store::{NewMessage, SentMessage, StoreError, StoreResult, Target};

/// Sends stored in one transaction at most.
const MAX_BATCH: usize = 128;
/// Batches in flight at once (each holds a pooled connection while it runs).
const WORKERS: usize = 4;

type Job = (NewMessage, oneshot::Sender<StoreResult<SentMessage>>);

/// The queue the workers take batches from; they end when it is dropped.
pub(super) struct Batcher {
    queue: mpsc::Sender<Job>,
}

/// Whether `send` may go through a batch: a direct message without files, and no text a
/// statement would refuse (which would fail the whole batch before it is stored singly).
pub(super) fn batchable(msg: &NewMessage) -> bool {
    let nul = |s: &str| s.contains('\0');
    matches!(msg.target, Target::Address(ref a) if !nul(a))
        && msg.attachments.is_empty()
        && !nul(&msg.text)
        && !msg.reply_to.as_deref().is_some_and(nul)
        && !msg.client_id.as_deref().is_some_and(nul)
}

impl Batcher {
    pub(super) fn start(conns: Conns) -> Batcher {
        let (queue, rx) = mpsc::channel::<Job>(MAX_BATCH * WORKERS * 4);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..WORKERS {
            tokio::spawn(work(rx.clone(), conns.clone()));
        }
        Batcher { queue }
    }

    pub(super) async fn send(&self, msg: NewMessage) -> StoreResult<SentMessage> {
        let (tx, rx) = oneshot::channel();
        self.queue
            .send((msg, tx))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }
}

async fn work(rx: Arc<Mutex<mpsc::Receiver<Job>>>, conns: Conns) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    loop {
        // One worker waits for the next send while the others store theirs; what queued
        // meanwhile is the next batch.
        if rx.lock().await.recv_many(&mut jobs, MAX_BATCH).await == 0 {
            return;
        }
        let (msgs, answers): (Vec<NewMessage>, Vec<_>) = jobs.drain(..).unzip();
        let results = match store(&conns, &msgs).await {
            Ok(results) => results,
            Err(e) => {
                if msgs.len() > 1 {
                    tracing::debug!(
                        "a batch of {} sends failed ({e}); storing them singly",
                        msgs.len()
                    );
                }
                let mut singly = Vec::with_capacity(msgs.len());
                for msg in &msgs {
                    singly.push(conns.send_one(msg).await);
                }
                singly
            }
        };
        for (answer, result) in answers.into_iter().zip(results) {
            // The sender may have gone; what was stored stays stored.
            let _ = answer.send(result);
        }
    }
}

async fn store(conns: &Conns, msgs: &[NewMessage]) -> StoreResult<Vec<StoreResult<SentMessage>>> {
    in_tx!(conns, "sending messages", |c, p| send_dms(c, msgs, &mut p))
}

/// Stores direct messages (every one `batchable`); the result per message, in order.
async fn send_dms(
    c: &impl GenericClient,
    msgs: &[NewMessage],
    p: &mut Pending,
) -> StoreResult<Vec<StoreResult<SentMessage>>> {
    let address = |m: &NewMessage| match &m.target {
        Target::Address(a) => a.clone(),
        Target::Group(g) => format!("group:{g}"),
    };
    let mut addresses: Vec<String> = msgs.iter().map(address).collect();
    addresses.sort();
    addresses.dedup();
    let rows = query(
        c,
        "looking up recipients",
        "SELECT chat_address, id FROM users WHERE chat_address = ANY($1::text[])",
        &[&addresses],
    )
    .await?;
    let mut receiver: HashMap<String, i64> = HashMap::with_capacity(rows.len());
    for r in &rows {
        receiver.insert(r.at(0)?, r.at(1)?);
    }
    let mut sender_ids: Vec<i64> = msgs.iter().map(|m| m.sender_id).collect();
    sender_ids.sort_unstable();
    sender_ids.dedup();
    let rows = query(
        c,
        "reading the senders",
        "SELECT id, chat_address, display_name, kind FROM users WHERE id = ANY($1::bigint[])",
        &[&sender_ids],
    )
    .await?;
    let mut sender: HashMap<i64, (String, String, Kind)> = HashMap::with_capacity(rows.len());
    for r in &rows {
        let kind: String = r.at(3)?;
        sender.insert(
            r.at(0)?,
            (r.at(1)?, r.at(2)?, Kind::parse(&kind).unwrap_or_default()),
        );
    }

    // Each message's receiver, or its error.
    let mut results: Vec<Option<StoreResult<SentMessage>>> = Vec::with_capacity(msgs.len());
    let mut to: Vec<Option<i64>> = Vec::with_capacity(msgs.len());
    for m in msgs {
        match receiver.get(&address(m)) {
            Some(id) => {
                to.push(Some(*id));
                results.push(None);
            }
            None => {
                to.push(None);
                results.push(Some(Err(StoreError::UnknownRecipient(address(m)))));
            }
        }
    }

    // Both directions of every conversation, in one order so concurrent batches do not
    // deadlock over new rows.
    let mut pairs: Vec<(i64, i64)> = msgs
        .iter()
        .zip(&to)
        .filter_map(|(m, r)| r.map(|r| [(m.sender_id, r), (r, m.sender_id)]))
        .flatten()
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    let (a, b): (Vec<i64>, Vec<i64>) = pairs.into_iter().unzip();
    execute(
        c,
        "recording conversations",
        "INSERT INTO dm_peers (user_id, peer_id)
         SELECT * FROM unnest($1::bigint[], $2::bigint[]) ORDER BY 1, 2
         ON CONFLICT DO NOTHING",
        &[&a, &b],
    )
    .await?;

    let stored: Vec<(&NewMessage, i64)> = msgs
        .iter()
        .zip(&to)
        .filter_map(|(m, r)| r.map(|r| (m, r)))
        .collect();
    let col = |f: fn(&NewMessage) -> String| stored.iter().map(|(m, _)| f(m)).collect::<Vec<_>>();
    let ids = col(|m| m.public_id.clone());
    let targets = col(address);
    let texts = col(|m| m.text.clone());
    let senders: Vec<i64> = stored.iter().map(|(m, _)| m.sender_id).collect();
    let replies: Vec<Option<&str>> = stored.iter().map(|(m, _)| m.reply_to.as_deref()).collect();
    let created: Vec<i64> = stored.iter().map(|(m, _)| m.created_at).collect();
    let convs: Vec<i64> = stored
        .iter()
        .map(|(m, r)| messages::dm_conv(m.sender_id, *r))
        .collect();
    let client_ids: Vec<Option<&str>> =
        stored.iter().map(|(m, _)| m.client_id.as_deref()).collect();
    let languages: Vec<Option<&str>> = stored.iter().map(|(m, _)| m.language.as_deref()).collect();
    // A client id sent before (or twice in this batch) stores nothing: RETURNING leaves it out.
    let rows = query(
        c,
        "storing messages",
        "INSERT INTO messages (public_id, sender_id, to_target, text, reply_to, created_at, conv,
                               client_id, language)
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[],
                              $6::bigint[], $7::bigint[], $8::text[], $9::text[])
         ON CONFLICT (sender_id, client_id) WHERE client_id IS NOT NULL DO NOTHING
         RETURNING public_id, id",
        &[
            &ids,
            &senders,
            &targets,
            &texts,
            &replies,
            &created,
            &convs,
            &client_ids,
            &languages,
        ],
    )
    .await?;
    let mut rowid: HashMap<String, i64> = HashMap::with_capacity(rows.len());
    for r in &rows {
        rowid.insert(r.at(0)?, r.at(1)?);
    }

    let enrich = voice::languages_in_use(c).await?;
    let mut jobs: Vec<i64> = Vec::new();
    let mut job_times: Vec<i64> = Vec::new();
    for ((m, r), slot) in msgs.iter().zip(&to).zip(results.iter_mut()) {
        let Some(receiver) = *r else { continue };
        let Some(&id) = rowid.get(&m.public_id) else {
            *slot = Some(messages::first_send(c, m).await);
            continue;
        };
        let wants_job = enrich && !m.text.trim().is_empty();
        if wants_job {
            jobs.push(id);
            job_times.push(m.created_at);
        }
        let from = sender
            .get(&m.sender_id)
            .cloned()
            .ok_or_else(|| StoreError::Conflict("the sender's identity is gone".into()))?;
        let event = messages::new_event(m, from, address(m), None, Vec::new());
        p.deliver(receiver, id, None, Some(event));
        *slot = Some(Ok(SentMessage {
            public_id: m.public_id.clone(),
            created_at: m.created_at,
            recipients: 1,
            duplicate: false,
            enrich: wants_job,
        }));
    }
    if !jobs.is_empty() {
        execute(
            c,
            "queueing voice jobs",
            "INSERT INTO voice_jobs (message_id, voice, created_at)
             SELECT m, false, t FROM unnest($1::bigint[], $2::bigint[]) AS j(m, t)
             ON CONFLICT DO NOTHING",
            &[&jobs, &job_times],
        )
        .await?;
    }
    results
        .into_iter()
        .map(|r| r.ok_or_else(|| StoreError::Conflict("a send in a batch had no result".into())))
        .collect()
}
