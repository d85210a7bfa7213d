//! The fleet as its hosts report it (`npcnix fleet status`): every host's
//! signed receipt in a remote, read through the remote's
//! [`crate::store::ReleaseLog`] and verified against the host's key (pinned
//! by the operator, or remembered on first use), with a verdict per host.
//! The CLI reads and writes the key files and prints.

use std::collections::{BTreeMap, BTreeSet};

use crate::format::keys::PublicKey;
use crate::format::receipt::Receipt;
use crate::store::{Remote, StoreError};
use crate::verify::receipt::{claimed_key, verify, ReceiptError};

/// One host's line.
#[derive(serde::Serialize)]
pub struct Row {
    pub host: String,
    pub verdict: &'static str,
    pub pinned: bool,
    pub key_id: Option<String>,
    pub configuration: Option<String>,
    pub active_version: Option<u64>,
    /// BLAKE3 of the active release's statement (a promotion counts only
    /// hosts running exactly the release it opens).
    pub active_statement: Option<String>,
    pub result: Option<String>,
    pub check: Option<String>,
    pub waiting_until: Option<u64>,
    pub probation: Option<u64>,
    /// The host's declarative hold (issue 34).
    pub hold: Option<crate::format::receipt::HoldRef>,
    /// The mirror that answered the host (issue 34).
    pub mirror: Option<String>,
    pub bad: Vec<u64>,
    /// The witnessed log head the host accepted last (issue 37).
    pub log: Option<crate::format::merkle::TreeHead>,
    pub time: Option<u64>,
    pub age_secs: Option<u64>,
    pub seq: Option<u64>,
    pub detail: Option<String>,
}

/// The hosts' lines, and whether a key was learned on first use (the
/// caller saves `known`) or a newer receipt seen (the caller saves `seen`).
pub struct Survey {
    pub rows: Vec<Row>,
    pub learned: bool,
    pub seen_changed: bool,
}

impl Survey {
    /// A host is anything but `ok` or `unpinned`: stale, missing, replayed,
    /// a bad signature or a changed key (trust on first use included).
    pub fn failing(&self) -> bool {
        self.rows
            .iter()
            .any(|r| !matches!(r.verdict, "ok" | "unpinned"))
    }
}

/// Which rows `fleet status` shows (all of them by default; the checks
/// and the summary always cover every host).
#[derive(Clone, Copy, Debug, Default)]
pub struct Filter {
    pub version: Option<u64>,
    pub stale: bool,
    pub failing: bool,
}

impl Filter {
    pub fn is_active(&self) -> bool {
        self.version.is_some() || self.stale || self.failing
    }

    pub fn shows(&self, r: &Row) -> bool {
        self.version.is_none_or(|v| r.active_version == Some(v))
            && (!self.stale || matches!(r.verdict, "stale" | "missing"))
            && (!self.failing
                || !matches!(r.verdict, "ok" | "unpinned")
                || matches!(
                    r.result.as_deref(),
                    Some("rejected" | "activation-failed" | "rolled-back" | "rollback-failed")
                ))
    }
}

/// What `fleet status` remembers of a host between runs: the newest receipt
/// it verified. A receipt with a lower sequence number is a replay.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LastSeen {
    pub seq: u64,
    pub time: u64,
    /// The key (ID) that signed it: a host reinstalled with a new key starts
    /// its sequence again, and is not held to the old key's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// The file format of the remembered receipts (`<known-hosts>.seen.json`).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeenFile {
    pub format: String,
    pub hosts: BTreeMap<String, LastSeen>,
}

pub const SEEN_FORMAT: &str = "npcnix-fleet-seen/v1";

/// `ours` merged into what another run wrote meanwhile (`theirs`): per
/// host, the newer receipt of the same key wins, so concurrent runs never
/// move a host's sequence back.
pub fn merge_seen(
    theirs: BTreeMap<String, LastSeen>,
    ours: &BTreeMap<String, LastSeen>,
) -> BTreeMap<String, LastSeen> {
    let mut out = theirs;
    for (host, mine) in ours {
        match out.get(host) {
            Some(t) if t.key == mine.key && t.seq >= mine.seq => {}
            _ => {
                out.insert(host.clone(), mine.clone());
            }
        }
    }
    out
}

/// How a survey reads the store.
#[derive(Clone, Copy)]
pub struct Options<'p> {
    /// Receipts read at once (at least 1).
    pub concurrency: usize,
    /// Called as receipts are read: (read so far, total).
    pub progress: Option<&'p (dyn Fn(usize, usize) + Sync)>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            concurrency: DEFAULT_CONCURRENCY,
            progress: None,
        }
    }
}

/// Receipts read at once by default: enough to hide a store's latency
/// (S3 answers a small GET in tens of milliseconds), few enough to stay
/// polite to a shared bucket or mirror.
pub const DEFAULT_CONCURRENCY: usize = 16;

/// Most receipts listed (hosts) in one survey.
pub const MAX_HOSTS: usize = 1_000_000;

/// One host's receipt as read and checked (in parallel), before what
/// depends on the other hosts and the remembered state is decided.
enum Checked {
    /// Listed, then gone (reported missing).
    Gone,
    /// The store failed to give it.
    Unreadable(String),
    Verified {
        receipt: Box<Receipt>,
        key: PublicKey,
        pinned: bool,
        /// The key was learned from this receipt (first use).
        learned: bool,
    },
    KeyChanged {
        key_id: String,
    },
    BadSignature {
        pinned: bool,
        key_id: Option<String>,
        detail: String,
    },
}

/// Reads and checks one host's receipt: with its pinned key, else the one
/// `known` remembers, else (first use) the key it claims.
fn check_one(
    log: &crate::store::ReleaseLog<'_>,
    host: &str,
    remote_name: &str,
    pinned: &BTreeMap<String, PublicKey>,
    known: &BTreeMap<String, PublicKey>,
) -> Checked {
    let bytes = match log.receipt(host) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Checked::Gone,
        Err(e) => return Checked::Unreadable(e.to_string()),
    };
    let (key, is_pinned, learned) = match (pinned.get(host), known.get(host)) {
        (Some(k), _) => (k.clone(), true, false),
        (None, Some(k)) => (k.clone(), false, false),
        (None, None) => match claimed_key(&bytes) {
            Ok(k) => (k, false, true),
            Err(e) => {
                return Checked::BadSignature {
                    pinned: false,
                    key_id: None,
                    detail: e.to_string(),
                }
            }
        },
    };
    match verify(&bytes, &key, host, remote_name) {
        Ok(receipt) => Checked::Verified {
            receipt: Box::new(receipt),
            key,
            pinned: is_pinned,
            learned,
        },
        Err(ReceiptError::BadSignature(_)) | Err(ReceiptError::Binding(_))
            if !is_pinned && claimed_key(&bytes).is_ok_and(|k| k != key) =>
        {
            Checked::KeyChanged {
                key_id: key.key_id.to_string(),
            }
        }
        Err(e) => Checked::BadSignature {
            pinned: is_pinned,
            key_id: Some(key.key_id.to_string()),
            detail: e.to_string(),
        },
    }
}

/// Reads and verifies every receipt of `remote` (named `remote_name`):
/// with the pinned key of a host, else the one `known` remembers (learned
/// on first use, added to `known`). A receipt older than `stale_after` is
/// stale; one older than the newest `seen` for its host is replayed (newer
/// ones update `seen`); a host pinned, known or seen before without a
/// receipt now is missing. Receipts are read `opts.concurrency` at a time;
/// what is kept per host is its checked receipt, never the bytes.
#[allow(clippy::too_many_arguments)]
pub fn survey(
    remote: &Remote,
    remote_name: &str,
    pinned: &BTreeMap<String, PublicKey>,
    known: &mut BTreeMap<String, PublicKey>,
    seen: &mut BTreeMap<String, LastSeen>,
    stale_after: u64,
    now: u64,
    opts: Options<'_>,
) -> Result<Survey, StoreError> {
    let log = remote.log();
    let hosts: Vec<String> = log
        .receipt_hosts(MAX_HOSTS)?
        .into_iter()
        .filter(|h| crate::format::rollout::is_host_id(h))
        .collect();
    let checked = {
        let snapshot: &BTreeMap<String, PublicKey> = known;
        read_all(&log, &hosts, remote_name, pinned, snapshot, opts)
    };
    let mut seen_changed = false;
    let mut learned = false;
    let mut rows = Vec::with_capacity(hosts.len());
    let mut listed = BTreeSet::new();
    for (host, c) in hosts.iter().zip(checked) {
        let host = host.as_str();
        match c {
            Checked::Gone => continue,
            Checked::Unreadable(detail) => {
                listed.insert(host.to_owned());
                rows.push(row(
                    host,
                    "bad-signature",
                    pinned.contains_key(host),
                    None,
                    Some(detail),
                ));
            }
            Checked::KeyChanged { key_id } => {
                listed.insert(host.to_owned());
                rows.push(row(
                    host,
                    "key-changed",
                    false,
                    Some(key_id),
                    Some("signed by another key than the one remembered on first use".into()),
                ));
            }
            Checked::BadSignature {
                pinned: p,
                key_id,
                detail,
            } => {
                listed.insert(host.to_owned());
                rows.push(row(host, "bad-signature", p, key_id, Some(detail)));
            }
            Checked::Verified {
                receipt: r,
                key,
                pinned: is_pinned,
                learned: first_use,
            } => {
                listed.insert(host.to_owned());
                if first_use {
                    known.insert(host.to_owned(), key.clone());
                    learned = true;
                }
                let age = now.saturating_sub(r.time);
                let key_id = key.key_id.to_string();
                let last = seen
                    .get(host)
                    .filter(|l| l.key.as_deref().is_none_or(|k| k == key_id))
                    .cloned();
                let replayed = last
                    .as_ref()
                    .is_some_and(|l| r.seq < l.seq || (r.seq == l.seq && r.time != l.time));
                let verdict = if replayed {
                    "replayed"
                } else if age > stale_after {
                    "stale"
                } else if is_pinned {
                    "ok"
                } else {
                    "unpinned"
                };
                let mut row = from_receipt(host, verdict, is_pinned, &key, &r, now);
                if let (true, Some(l)) = (replayed, &last) {
                    row.detail = Some(format!(
                        "sequence {} from {}, but sequence {} from {} was seen before: an older receipt served again",
                        r.seq,
                        crate::format::time::rfc3339(r.time),
                        l.seq,
                        crate::format::time::rfc3339(l.time)
                    ));
                } else if last.as_ref().is_none_or(|l| r.seq > l.seq) {
                    seen.insert(
                        host.to_owned(),
                        LastSeen {
                            seq: r.seq,
                            time: r.time,
                            key: Some(key_id),
                        },
                    );
                    seen_changed = true;
                }
                rows.push(row);
            }
        }
    }
    let expected: BTreeSet<&String> = pinned
        .keys()
        .chain(known.keys())
        .chain(seen.keys())
        .collect();
    for host in expected.into_iter().filter(|h| !listed.contains(*h)) {
        rows.push(row(
            host,
            "missing",
            pinned.contains_key(host),
            None,
            Some(match seen.get(host) {
                Some(l) => format!(
                    "no receipt in the store, where sequence {} from {} was before (deleted?)",
                    l.seq,
                    crate::format::time::rfc3339(l.time)
                ),
                None => "no receipt in the store".into(),
            }),
        ));
    }
    flag_split_views(&log, &mut rows)?;
    Ok(Survey {
        rows,
        learned,
        seen_changed,
    })
}

/// Gossip through receipts (issue 37): hosts report the witnessed log head
/// they accepted last. Two heads of the same size with different roots,
/// or a head the store's current log does not extend (checked with a
/// consistency proof from the store's tiles), mean some hosts were shown
/// another history: each such host's verdict is `log-inconsistent`.
/// Nothing needs the log key here: heads that all extend into one tree
/// are consistent with each other whatever signed it, and a store that
/// lies about its tree only makes honest heads fail, loudly.
fn flag_split_views(
    log: &crate::store::ReleaseLog<'_>,
    rows: &mut [Row],
) -> Result<(), StoreError> {
    use crate::format::merkle::hex;
    use crate::verify::witness::{grows, growth, Growth, TreeHead};
    if rows.iter().all(|r| r.log.is_none()) {
        return Ok(());
    }
    let current: Option<TreeHead> = log
        .log_checkpoint()?
        .and_then(|(bytes, _)| {
            let note = crate::format::note::Note::parse(&bytes).ok()?;
            crate::format::note::Checkpoint::parse(&note.text).ok()
        })
        .map(|c| TreeHead::from(&c));
    // Per size, the roots hosts reported and one host for each.
    let mut by_size: BTreeMap<u64, BTreeMap<crate::format::merkle::Hash, &str>> = BTreeMap::new();
    for r in rows.iter() {
        if let Some(h) = r.log {
            by_size
                .entry(h.size)
                .or_default()
                .entry(h.root)
                .or_insert(r.host.as_str());
        }
    }
    let mut verdicts: Vec<Option<String>> = vec![None; rows.len()];
    for (i, r) in rows.iter().enumerate() {
        let Some(h) = r.log else { continue };
        if let Some((_, other)) = by_size
            .get(&h.size)
            .and_then(|roots| roots.iter().find(|(root, _)| **root != h.root))
        {
            verdicts[i] = Some(format!(
                "accepted the log at {} entries with root {}, host {} with another root: the hosts were shown different histories",
                h.size,
                hex(&h.root),
                other
            ));
            continue;
        }
        let Some(cur) = current else {
            verdicts[i] = Some(format!(
                "accepted the log at {} entries, but the store has no log now",
                h.size
            ));
            continue;
        };
        let why = match growth(Some(&h), &cur) {
            Growth::Same => None,
            Growth::Fork(d) => Some(d),
            Growth::Larger { old, new } => {
                match crate::store::tlog::consistency_proof(log, old, new) {
                    Ok(proof) => grows(&h, &cur, &proof).err(),
                    Err(crate::store::tlog::LogReadError::Store(e)) => return Err(e),
                    Err(e) => Some(format!("the store's log cannot prove it: {e}")),
                }
            }
        };
        verdicts[i] = why.map(|d| {
            format!(
                "accepted the log at {} entries, which the store's log of {} entries does not extend: {d}",
                h.size, cur.size
            )
        });
    }
    for (r, v) in rows.iter_mut().zip(verdicts) {
        if let Some(d) = v {
            r.verdict = "log-inconsistent";
            r.detail = Some(d);
        }
    }
    Ok(())
}

/// [`check_one`] for every host, `opts.concurrency` at a time, in the
/// hosts' order.
fn read_all(
    log: &crate::store::ReleaseLog<'_>,
    hosts: &[String],
    remote_name: &str,
    pinned: &BTreeMap<String, PublicKey>,
    known: &BTreeMap<String, PublicKey>,
    opts: Options<'_>,
) -> Vec<Checked> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<Checked>>> = hosts.iter().map(|_| Mutex::new(None)).collect();
    let workers = opts.concurrency.clamp(1, 256).min(hosts.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(host) = hosts.get(i) else {
                    break;
                };
                let c = check_one(log, host, remote_name, pinned, known);
                if let Ok(mut slot) = slots[i].lock() {
                    *slot = Some(c);
                }
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if let Some(p) = opts.progress {
                    p(n, hosts.len());
                }
            });
        }
    });
    slots
        .into_iter()
        .map(|m| {
            m.into_inner().ok().flatten().unwrap_or_else(|| {
                Checked::Unreadable("internal error: the receipt was not read".into())
            })
        })
        .collect()
}

fn row(
    host: &str,
    verdict: &'static str,
    pinned: bool,
    key_id: Option<String>,
    detail: Option<String>,
) -> Row {
    Row {
        host: host.to_owned(),
        verdict,
        pinned,
        key_id,
        configuration: None,
        active_version: None,
        active_statement: None,
        result: None,
        check: None,
        waiting_until: None,
        probation: None,
        hold: None,
        mirror: None,
        bad: Vec::new(),
        log: None,
        time: None,
        age_secs: None,
        seq: None,
        detail,
    }
}

fn from_receipt(
    host: &str,
    verdict: &'static str,
    pinned: bool,
    key: &PublicKey,
    r: &Receipt,
    now: u64,
) -> Row {
    Row {
        host: host.to_owned(),
        verdict,
        pinned,
        key_id: Some(key.key_id.to_string()),
        configuration: Some(r.configuration.clone()),
        active_version: r.active.map(|a| a.version),
        active_statement: r.active.map(|a| a.statement.to_hex()),
        result: Some(r.result.clone()),
        check: r.check.clone(),
        waiting_until: r.waiting_until,
        probation: r.probation,
        hold: r.hold.clone(),
        mirror: r.mirror.clone(),
        bad: r.bad.clone(),
        log: r.log,
        time: Some(r.time),
        age_secs: Some(now.saturating_sub(r.time)),
        seq: Some(r.seq),
        detail: None,
    }
}

/// "v12: 37 hosts", "refused: 1 host (archive-hash)", ... from verified rows.
pub fn summarize(rows: &[Row]) -> Vec<String> {
    let plural = |n: usize| if n == 1 { "host" } else { "hosts" };
    let mut by_version: BTreeMap<u64, usize> = BTreeMap::new();
    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    let mut none = 0;
    let mut unverified = 0;
    let mut held: BTreeMap<(u64, String), usize> = BTreeMap::new();
    for r in rows {
        if r.time.is_none() {
            unverified += 1;
            continue;
        }
        if let Some(h) = &r.hold {
            *held.entry((h.max_version, h.reason.clone())).or_default() += 1;
        }
        match r.active_version {
            Some(v) => *by_version.entry(v).or_default() += 1,
            None => none += 1,
        }
        if r.result.as_deref() == Some("rejected") {
            *refused
                .entry(r.check.clone().unwrap_or_else(|| "?".into()))
                .or_default() += 1;
        }
    }
    let mut out: Vec<String> = by_version
        .iter()
        .rev()
        .map(|(v, n)| format!("v{v}: {n} {}", plural(*n)))
        .collect();
    if none > 0 {
        out.push(format!("no active version: {none} {}", plural(none)));
    }
    for ((max, reason), n) in held {
        out.push(format!(
            "held at v{max} or below: {n} {} ({})",
            plural(n),
            crate::format::text::visible(&reason)
        ));
    }
    for (check, n) in refused {
        out.push(format!(
            "refused the latest release: {n} {} ({check})",
            plural(n)
        ));
    }
    if unverified > 0 {
        out.push(format!(
            "unverified or missing: {unverified} {}",
            plural(unverified)
        ));
    }
    out
}
