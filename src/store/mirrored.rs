//! One remote served by several stores holding the same signed objects
//! (issue 34): requests go to the mirror in use, and only a store *error*
//! (unreachable, 5xx, time-out, missing object, refused credentials, an
//! operation the mirror cannot do) moves them to the next. An answer is
//! never replaced by another mirror's: whatever a mirror serves is judged
//! as today (an older or tampered head is refused, and rollback protection
//! is per remote, whatever mirror served the head). Writes (host receipts)
//! go to the first store, the remote's own URL.

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{ETag, Fetched, Remote, Store, StoreError, StoreErrorKind};

pub(crate) struct Mirrored {
    stores: Vec<Box<dyn Store>>,
    /// The mirror that answered last: the idle poll's one conditional
    /// request goes there.
    current: AtomicUsize,
    /// Since when another mirror than the first is in use: after
    /// [`BACK_TO_PRIMARY`] the first is asked first again (a lagging
    /// mirror must not keep a host on an old head for ever).
    away_since: std::sync::Mutex<Option<std::time::Instant>>,
}

/// How long a mirror other than the remote's own URL stays in use before
/// the remote's URL is asked first again.
const BACK_TO_PRIMARY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Whether another mirror may be asked after `e`: the mirror did not
/// answer (or cannot), as opposed to answering something wrong.
fn fails_over(e: &StoreError) -> bool {
    matches!(
        e.kind,
        StoreErrorKind::Transient
            | StoreErrorKind::NotFound
            | StoreErrorKind::Unauthorized
            | StoreErrorKind::Unsupported
    )
}

impl Mirrored {
    /// Asks the mirror in use, then the others in order, while they fail
    /// over; `f` learns whether it asks the mirror in use.
    fn each<T>(
        &self,
        f: impl Fn(&dyn Store, bool) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.each_answer(false, f)
    }

    /// As [`Self::each`]; with `absent_answers`, "no such object" is an
    /// answer (for objects whose absence is normal: a mirror that has no
    /// rollout decision says so, as a lagging one may; asking the others
    /// only turns a down primary into an error).
    fn each_answer<T>(
        &self,
        absent_answers: bool,
        f: impl Fn(&dyn Store, bool) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let n = self.stores.len();
        let mut start = self.current.load(Ordering::Relaxed) % n;
        if let Ok(mut away) = self.away_since.lock() {
            if away.is_some_and(|t| t.elapsed() >= BACK_TO_PRIMARY) {
                *away = None;
                self.current.store(0, Ordering::Relaxed);
                start = 0;
            }
        }
        // The error to report when none answers: a transient one if any
        // (so the agent backs off and keeps its cached head).
        let mut last: Option<StoreError> = None;
        for i in 0..n {
            let at = (start + i) % n;
            match f(self.stores[at].as_ref(), i == 0) {
                Ok(v) => {
                    if at != self.current.swap(at, Ordering::Relaxed) {
                        if let Ok(mut away) = self.away_since.lock() {
                            *away = (at != 0).then(std::time::Instant::now);
                        }
                    }
                    return Ok(v);
                }
                Err(e) if absent_answers && e.kind == StoreErrorKind::NotFound => return Err(e),
                Err(e) if fails_over(&e) => {
                    if last
                        .as_ref()
                        .is_none_or(|l| l.kind != StoreErrorKind::Transient)
                    {
                        last = Some(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            StoreError::new(StoreErrorKind::Other, "mirrors", "", "no store".into())
        }))
    }

    fn primary(&self) -> &dyn Store {
        self.stores[0].as_ref()
    }
}

impl Store for Mirrored {
    fn describe(&self) -> String {
        self.stores[self.current.load(Ordering::Relaxed) % self.stores.len()].describe()
    }

    fn get(
        &self,
        key: &str,
        if_none_match: Option<&ETag>,
        limit: u64,
    ) -> Result<Fetched, StoreError> {
        // An ETag is one server's: another mirror is asked unconditionally,
        // and a "not modified" from it is against the protocol.
        self.each_answer(super::is_optional(key), |s, in_use| {
            let asked = if_none_match.filter(|_| in_use);
            match s.get(key, asked, limit) {
                Ok(Fetched::NotModified) if asked.is_none() => Err(StoreError::new(
                    StoreErrorKind::Protocol,
                    &s.describe(),
                    key,
                    "the store answered 'not modified' to a request without If-None-Match".into(),
                )),
                r => r,
            }
        })
    }

    fn open(
        &self,
        key: &str,
        from: u64,
        max_bytes: u64,
    ) -> Result<Box<dyn Read + Send>, StoreError> {
        self.each(|s, _| s.open(key, from, max_bytes))
    }

    fn put_new(&self, key: &str, body: &mut dyn Read, len: u64) -> Result<(), StoreError> {
        self.primary().put_new(key, body, len)
    }

    fn put_swap(
        &self,
        key: &str,
        body: &[u8],
        expected: Option<&ETag>,
    ) -> Result<ETag, StoreError> {
        self.primary().put_swap(key, body, expected)
    }

    fn put(&self, key: &str, body: &[u8]) -> Result<(), StoreError> {
        self.primary().put(key, body)
    }

    fn list(&self, prefix: &str, max: usize) -> Result<Vec<String>, StoreError> {
        self.each(|s, _| s.list(prefix, max))
    }
}

impl Remote {
    /// `remotes[0]` (the remote's own URL) with the others as mirrors of
    /// it; one remote is itself.
    pub fn mirrored(remotes: Vec<Remote>) -> Remote {
        if remotes.len() == 1 {
            return remotes.into_iter().next().expect("one");
        }
        Remote::new(Box::new(Mirrored {
            stores: remotes.into_iter().map(Remote::into_inner).collect(),
            current: AtomicUsize::new(0),
            away_since: std::sync::Mutex::new(None),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in store: answers `get` with its name, or fails with `kind`.
    struct Fake {
        name: &'static str,
        fail: Option<StoreErrorKind>,
        asked: std::sync::Mutex<Vec<Option<String>>>,
    }

    impl Store for Fake {
        fn describe(&self) -> String {
            self.name.into()
        }
        fn get(&self, key: &str, inm: Option<&ETag>, _: u64) -> Result<Fetched, StoreError> {
            self.asked
                .lock()
                .expect("lock")
                .push(inm.map(|e| e.0.clone()));
            match self.fail {
                Some(kind) => Err(StoreError::new(kind, self.name, key, "down".into())),
                None => Ok(Fetched::Object {
                    bytes: self.name.as_bytes().to_vec(),
                    etag: None,
                }),
            }
        }
        fn open(&self, _: &str, _: u64, _: u64) -> Result<Box<dyn Read + Send>, StoreError> {
            unimplemented!()
        }
        fn put_new(&self, _: &str, _: &mut dyn Read, _: u64) -> Result<(), StoreError> {
            unimplemented!()
        }
        fn put_swap(&self, _: &str, _: &[u8], _: Option<&ETag>) -> Result<ETag, StoreError> {
            unimplemented!()
        }
        fn list(&self, _: &str, _: usize) -> Result<Vec<String>, StoreError> {
            unimplemented!()
        }
    }

    fn fake(name: &'static str, fail: Option<StoreErrorKind>) -> Remote {
        Remote::new(Box::new(Fake {
            name,
            fail,
            asked: Default::default(),
        }))
    }

    fn body(f: Result<Fetched, StoreError>) -> String {
        match f {
            Ok(Fetched::Object { bytes, .. }) => String::from_utf8(bytes).expect("utf8"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_mirror_that_does_not_answer_is_passed_over_and_the_next_one_sticks() {
        let r = Remote::mirrored(vec![
            fake("primary", Some(StoreErrorKind::Transient)),
            fake("mirror", None),
        ]);
        let etag = ETag("\"e\"".into());
        assert_eq!(body(r.store().get("latest", Some(&etag), 10)), "mirror");
        assert_eq!(r.describe(), "mirror");
        assert_eq!(body(r.store().get("latest", Some(&etag), 10)), "mirror");
    }

    #[test]
    fn an_answer_against_the_protocol_is_not_hidden_by_another_mirror() {
        let r = Remote::mirrored(vec![
            fake("primary", Some(StoreErrorKind::Protocol)),
            fake("mirror", None),
        ]);
        let e = r
            .store()
            .get("latest", None, 10)
            .expect_err("not failed over");
        assert_eq!(e.kind, StoreErrorKind::Protocol);
    }

    /// A stand-in that answers "not modified" whatever it is asked.
    struct Unchanged;

    impl Store for Unchanged {
        fn describe(&self) -> String {
            "unchanged".into()
        }
        fn get(&self, _: &str, _: Option<&ETag>, _: u64) -> Result<Fetched, StoreError> {
            Ok(Fetched::NotModified)
        }
        fn open(&self, _: &str, _: u64, _: u64) -> Result<Box<dyn Read + Send>, StoreError> {
            unimplemented!()
        }
        fn put_new(&self, _: &str, _: &mut dyn Read, _: u64) -> Result<(), StoreError> {
            unimplemented!()
        }
        fn put_swap(&self, _: &str, _: &[u8], _: Option<&ETag>) -> Result<ETag, StoreError> {
            unimplemented!()
        }
        fn list(&self, _: &str, _: usize) -> Result<Vec<String>, StoreError> {
            unimplemented!()
        }
    }

    #[test]
    fn not_modified_from_a_mirror_asked_without_an_etag_is_refused() {
        let r = Remote::mirrored(vec![
            fake("primary", Some(StoreErrorKind::Transient)),
            Remote::new(Box::new(Unchanged)),
        ]);
        let etag = ETag("\"from-primary\"".into());
        let e = r
            .store()
            .get("latest", Some(&etag), 10)
            .expect_err("refused");
        assert_eq!(e.kind, StoreErrorKind::Protocol);
    }

    #[test]
    fn a_mirror_without_a_rollout_decision_answers_none_while_the_primary_is_down() {
        // The host uses the mirror (the primary is down); "no halt" from
        // it is its answer, not a reason to ask the primary again.
        let r = Remote::mirrored(vec![
            fake("primary", Some(StoreErrorKind::Transient)),
            fake("mirror", None),
        ]);
        assert_eq!(body(r.store().get("latest", None, 10)), "mirror");
        let r2 = Remote::mirrored(vec![
            fake("mirror", Some(StoreErrorKind::NotFound)),
            fake("primary", Some(StoreErrorKind::Transient)),
        ]);
        let e = r2
            .log()
            .decision(crate::store::Object::Halt(7))
            .expect("none, not an error");
        assert_eq!(e, None);
        // Other objects still fail over (and report the transient error).
        let e = r2
            .store()
            .get("releases/00000000000000000007", None, 10)
            .expect_err("no answer");
        assert_eq!(e.kind, StoreErrorKind::Transient);
        // "Access denied" for a decision (S3 without ListBucket) is none.
        let denied = Remote::mirrored(vec![fake("s3", Some(StoreErrorKind::Unauthorized))]);
        assert_eq!(
            denied
                .log()
                .decision(crate::store::Object::Promotion(7, "early"))
                .expect("none"),
            None
        );
    }

    #[test]
    fn when_no_mirror_answers_a_transient_error_is_reported() {
        let r = Remote::mirrored(vec![
            fake("primary", Some(StoreErrorKind::Transient)),
            fake("mirror", Some(StoreErrorKind::NotFound)),
        ]);
        let e = r.store().get("latest", None, 10).expect_err("none answers");
        assert_eq!(e.kind, StoreErrorKind::Transient);
    }

    #[test]
    fn the_remotes_own_url_is_asked_first_again_after_an_hour_away() {
        let m = Mirrored {
            stores: vec![
                Remote::into_inner(fake("primary", None)),
                Remote::into_inner(fake("mirror", None)),
            ],
            current: AtomicUsize::new(1),
            away_since: std::sync::Mutex::new(
                std::time::Instant::now().checked_sub(BACK_TO_PRIMARY * 2),
            ),
        };
        assert_eq!(body(m.get("latest", None, 10)), "primary");
        assert_eq!(m.describe(), "primary");
    }
}
