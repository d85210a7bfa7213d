//! The witnessed log through whole polls (issue 37): a host with
//! `policy.witnesses` takes a release only once enough of its witnesses
//! cosigned a checkpoint that includes it and extends the one it accepted
//! before; a release the store shows this host alone is `unwitnessed`, a
//! forked log `log-inconsistent`, and both stay refused while their cause
//! lasts.

use super::kit::Kit;
use super::lifecycle::refused;
use crate::format::keys::SecretKey;
use crate::format::statement::RemoteName;
use crate::host::agent::Outcome;
use crate::verify::Check;
use crate::witness::{Witness, Witnessed};

struct Witnesses {
    keys: Vec<SecretKey>,
}

const NAMES: [&str; 3] = ["w0.example", "w1.example", "w2.example"];

impl Witnesses {
    fn new() -> Witnesses {
        Witnesses {
            keys: (0..3)
                .map(|_| SecretKey::generate().expect("key"))
                .collect(),
        }
    }

    fn witness<'a>(&'a self, k: &Kit, i: usize, state: &str) -> Witness<'a> {
        let dir = k.root().join(format!("witness-{i}-{state}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        Witness {
            name: NAMES[i].into(),
            key: &self.keys[i],
            state_dir: dir,
        }
    }

    /// Witness `i` runs once over the kit's store.
    fn run(&self, k: &Kit, i: usize) -> Witnessed {
        self.run_with_state(k, i, "state")
    }

    fn run_with_state(&self, k: &Kit, i: usize, state: &str) -> Witnessed {
        let dir = k.root().join("store");
        let store = crate::store::Remote::new(Box::new(crate::store::file::FileStore::new(
            dir.clone(),
            format!("file://{}", dir.display()),
        )));
        let log = crate::verify::witness::log_verifier(
            &RemoteName::new("prod").expect("name"),
            &k.log_key.public_key(),
        )
        .expect("vkey");
        self.witness(k, i, state)
            .witness(&store, &log, 1_800_000_000)
            .expect("witness")
    }

    /// The host config with the log key and `threshold` of the three
    /// witnesses.
    fn config(&self, k: &Kit, threshold: usize) -> serde_json::Value {
        let mut c = k.config();
        c["trusted_keys"]
            .as_array_mut()
            .expect("keys")
            .push(serde_json::json!({
                "public_key": k.log_key.public_key().to_base64(),
                "remotes": ["prod"],
                "role": "log",
            }));
        let keys: Vec<String> = (0..3)
            .map(|i| {
                crate::verify::witness::witness_verifier(NAMES[i], &self.keys[i].public_key())
                    .expect("vkey")
                    .to_string()
            })
            .collect();
        c["policy"] = serde_json::json!({"witnesses": {"keys": keys, "threshold": threshold}});
        c
    }
}

fn started(k: &Kit) {
    crate::host::state::DataDir::open(&k.root().join("data"))
        .expect("data")
        .load()
        .expect("state");
}

fn detail(o: &Result<Outcome, String>) -> String {
    match o {
        Ok(Outcome::Refused(r)) => r.to_string(),
        other => format!("{other:?}"),
    }
}

#[test]
fn release_is_taken_once_k_of_n_witnesses_cosigned_it() {
    let k = Kit::new(|_| {});
    started(&k);
    let w = Witnesses::new();
    let c = w.config(&k, 2);
    k.publish("v1", Some(&c));
    let agent = k.agent(&c);
    let o = k.poll(&agent);
    assert_eq!(refused(o.clone()), Check::Unwitnessed, "{}", detail(&o));
    // One cosignature of two: k - 1 is refused, and says so.
    assert!(matches!(w.run(&k, 0), Witnessed::Cosigned { size: 1, .. }));
    let o = k.poll(&agent);
    assert_eq!(refused(o.clone()), Check::Unwitnessed);
    assert!(detail(&o).contains("at most 1"), "{}", detail(&o));
    assert_eq!(k.running_marker(), "v0");
    w.run(&k, 2);
    assert_eq!(k.poll(&agent), Ok(Outcome::Activated { version: 1 }));
    let head = crate::host::state::DataDir::open(&k.root().join("data"))
        .expect("data")
        .load_log_head("prod")
        .expect("sidecar");
    assert_eq!(head.map(|h| h.size), Some(1), "the accepted head is kept");
}

/// The witnesses are behind: they cosigned the log before this release
/// was appended. The release waits (refused, re-judged every poll) until
/// they catch up; then it is taken.
#[test]
fn release_appended_after_the_witnessed_checkpoint_waits_for_the_witnesses() {
    let k = Kit::new(|_| {});
    started(&k);
    let w = Witnesses::new();
    let c = w.config(&k, 1);
    k.publish("v1", Some(&c));
    w.run(&k, 0);
    assert_eq!(k.poll(&k.agent(&c)), Ok(Outcome::Activated { version: 1 }));
    k.poll(&k.running_agent()).expect("confirm");
    k.publish("v2", Some(&c));
    let o = k.poll(&k.running_agent());
    assert_eq!(refused(o.clone()), Check::Unwitnessed);
    assert!(
        detail(&o).contains("not in the log's checkpoint of 1"),
        "{}",
        detail(&o)
    );
    w.run(&k, 0);
    assert_eq!(
        k.poll(&k.running_agent()),
        Ok(Outcome::Activated { version: 2 })
    );
}

/// A store (with a stolen release key) shows this host a release it never
/// logged: nobody else can see it, and the host does not take it.
#[test]
fn release_the_store_shows_this_host_alone_is_unwitnessed() {
    let k = Kit::new(|_| {});
    started(&k);
    let w = Witnesses::new();
    let c = w.config(&k, 1);
    k.publish("v1", Some(&c));
    w.run(&k, 0);
    let agent = k.agent(&c);
    assert_eq!(k.poll(&agent), Ok(Outcome::Activated { version: 1 }));
    k.poll(&k.running_agent()).expect("confirm");
    k.logging.set(false);
    k.publish("v2-targeted", Some(&c));
    w.run(&k, 0);
    let o = k.poll(&k.running_agent());
    assert_eq!(refused(o.clone()), Check::Unwitnessed, "{}", detail(&o));
    assert_eq!(k.running_marker(), "v1");
}

/// A split view with compromised witnesses: the store (holding the log
/// key too) shows a rewritten log, and witnesses that lost their state
/// cosign it. The host still catches it: the witnessed head does not
/// extend the one it accepted.
#[test]
fn split_view_cosigned_by_forgetful_witnesses_is_refused_as_log_inconsistent() {
    let k = Kit::new(|_| {});
    started(&k);
    let w = Witnesses::new();
    let c = w.config(&k, 1);
    k.publish("v1", Some(&c));
    k.publish("v2", Some(&c));
    w.run(&k, 0);
    assert_eq!(k.poll(&k.agent(&c)), Ok(Outcome::Activated { version: 2 }));
    k.poll(&k.running_agent()).expect("confirm");
    // The store's log is replaced by another history of 3 entries.
    std::fs::remove_dir_all(k.root().join("store/log")).expect("rm log");
    for i in 0..3 {
        crate::publish::tlog::append_statement(
            &crate::store::Remote::new(Box::new(crate::store::file::FileStore::new(
                k.root().join("store"),
                "file://fork".into(),
            ))),
            &crate::publish::tlog::LogSigner {
                remote: RemoteName::new("prod").expect("name"),
                key: &k.log_key,
                new_log: true,
                now: 0,
            },
            format!("forged {i}").as_bytes(),
            &crate::store::retry::Retry::none(),
        )
        .expect("forge");
    }
    k.logging.set(false);
    k.publish("v3", Some(&c));
    // The honest witness refuses it; a forgetful one (fresh state) cosigns.
    assert!(matches!(w.run(&k, 0), Witnessed::Fork { .. }));
    assert!(matches!(
        w.run_with_state(&k, 1, "fresh"),
        Witnessed::Cosigned { size: 3, .. }
    ));
    let c2 = {
        let mut c2 = c.clone();
        c2["policy"]["witnesses"]["threshold"] = serde_json::json!(1);
        c2
    };
    let o = k.poll(&k.agent(&c2));
    assert_eq!(refused(o.clone()), Check::LogInconsistent, "{}", detail(&o));
    assert_eq!(k.running_marker(), "v2");
}

#[test]
fn witness_policy_without_a_log_key_or_with_too_high_a_threshold_is_refused() {
    let k = Kit::new(|_| {});
    let w = Witnesses::new();
    let mut c = w.config(&k, 4);
    let v = crate::host::config::HostConfig::parse(&serde_json::to_vec(&c).expect("json"))
        .expect("parse")
        .validate();
    assert!(v.is_err());
    c["trusted_keys"].as_array_mut().expect("keys").pop();
    c["policy"]["witnesses"]["threshold"] = serde_json::json!(1);
    let e = crate::host::config::HostConfig::parse(&serde_json::to_vec(&c).expect("json"))
        .expect("parse")
        .validate()
        .expect_err("no log key");
    assert!(
        e.iter().any(|e| e.to_string().contains("role \"log\"")),
        "{e:?}"
    );
}

/// A release recorded as verified without the witness check (`npcnix
/// pull` on the agent's data dir, or a release verified before the policy
/// was set) is still checked before it is installed.
#[test]
fn release_recorded_without_the_check_is_checked_before_it_is_installed() {
    let k = Kit::new(|_| {});
    started(&k);
    let w = Witnesses::new();
    let c = w.config(&k, 1);
    k.publish("v1", Some(&c));
    w.run(&k, 0);
    assert_eq!(k.poll(&k.agent(&c)), Ok(Outcome::Activated { version: 1 }));
    k.poll(&k.running_agent()).expect("confirm");
    k.logging.set(false);
    k.publish("v2-unlogged", Some(&c));
    w.run(&k, 0);
    assert_eq!(refused(k.poll(&k.running_agent())), Check::Unwitnessed);
    // What a `pull` would record: v2 as the highest verified.
    let data = crate::host::state::DataDir::open(&k.root().join("data")).expect("data");
    let mut st = data.load().expect("state");
    let latest = std::fs::read(k.root().join("store/latest")).expect("latest");
    let b = crate::format::bundle::Bundle::decode(&latest).expect("bundle");
    st.remote_mut("prod").highest = Some(crate::verify::Seen {
        version: 2,
        statement: crate::format::Digest::of(&b.statement),
    });
    data.save(&st).expect("save");
    let o = k.poll(&k.running_agent());
    assert_eq!(refused(o.clone()), Check::Unwitnessed, "{}", detail(&o));
    assert_eq!(k.running_marker(), "v1");
}

fn witness_object(k: &Kit, w: &Witnesses, i: usize) -> std::path::PathBuf {
    let vkey =
        crate::verify::witness::witness_verifier(NAMES[i], &w.keys[i].public_key()).expect("vkey");
    k.root()
        .join("store")
        .join(crate::store::Object::WitnessCheckpoint(vkey.key_id).key())
}

/// One witness's object is too large (or garbage): a missing vote, never
/// a veto over what the other witnesses saw.
#[test]
fn one_witness_serving_junk_does_not_block_the_others() {
    let k = Kit::new(|_| {});
    started(&k);
    let w = Witnesses::new();
    let c = w.config(&k, 1);
    k.publish("v1", Some(&c));
    w.run(&k, 0);
    let junk = witness_object(&k, &w, 1);
    std::fs::create_dir_all(junk.parent().expect("dir")).expect("mkdir");
    std::fs::write(&junk, vec![b'x'; 17_000]).expect("junk");
    assert_eq!(k.poll(&k.agent(&c)), Ok(Outcome::Activated { version: 1 }));
}

/// An older note of a witness served again (a replay, a stale mirror) is
/// not a fork: the release waits as unwitnessed.
#[test]
fn replayed_older_witness_note_is_unwitnessed_not_a_fork() {
    let k = Kit::new(|_| {});
    started(&k);
    let w = Witnesses::new();
    let c = w.config(&k, 1);
    k.publish("v1", Some(&c));
    w.run(&k, 0);
    let old = std::fs::read(witness_object(&k, &w, 0)).expect("note");
    assert_eq!(k.poll(&k.agent(&c)), Ok(Outcome::Activated { version: 1 }));
    k.poll(&k.running_agent()).expect("confirm");
    k.publish("v2", Some(&c));
    w.run(&k, 0);
    assert_eq!(
        k.poll(&k.running_agent()),
        Ok(Outcome::Activated { version: 2 })
    );
    k.poll(&k.running_agent()).expect("confirm");
    k.publish("v3", Some(&c));
    std::fs::write(witness_object(&k, &w, 0), old).expect("replay");
    let o = k.poll(&k.running_agent());
    assert_eq!(refused(o.clone()), Check::Unwitnessed, "{}", detail(&o));
    assert!(detail(&o).contains("stale or replayed"), "{}", detail(&o));
}
