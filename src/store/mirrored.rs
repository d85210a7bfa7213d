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
}

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
        let n = self.stores.len();
        let start = self.current.load(Ordering::Relaxed) % n;
        let mut last = None;
        for i in 0..n {
            let at = (start + i) % n;
            match f(self.stores[at].as_ref(), i == 0) {
                Ok(v) => {
                    self.current.store(at, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(e) if fails_over(&e) => last = Some(e),
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
        // An ETag is one server's: another mirror is asked unconditionally.
        self.each(|s, in_use| s.get(key, if_none_match.filter(|_| in_use), limit))
    }

    fn open(&self, key: &str, max_bytes: u64) -> Result<Box<dyn Read + Send>, StoreError> {
        self.each(|s, _| s.open(key, max_bytes))
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
        fn open(&self, _: &str, _: u64) -> Result<Box<dyn Read + Send>, StoreError> {
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
}
