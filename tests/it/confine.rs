//! Landlock confinement of extraction: even if the extractor's path checks
//! were bypassed (modelled by a closure that writes outside on purpose),
//! the confined thread cannot write outside its directory.

use std::fs;

use npcnix::archive::confine::{run_confined, Confinement, ConfinementPolicy};
use npcnix::fsutil::TempDir;

#[test]
fn write_outside_the_extraction_dir_is_blocked_by_landlock() {
    let base =
        TempDir::new_in(&std::env::temp_dir().join("npcnix-tests"), "confine-").expect("tmp");
    let inside = base.path().join("tree");
    fs::create_dir(&inside).expect("mkdir");
    let outside = base.path().join("escaped");
    let (i2, o2) = (inside.clone(), outside.clone());
    let (res, confinement) =
        run_confined(inside.clone(), ConfinementPolicy::BestEffort, move || {
            let ok_inside = fs::write(i2.join("file"), b"fine").is_ok();
            let outside_err = fs::write(&o2, b"pwned").err().map(|e| e.kind());
            (ok_inside, outside_err)
        });
    let (ok_inside, outside_err) = res.expect("thread").expect("best effort runs");
    assert!(ok_inside, "writing inside must work");
    match confinement {
        Confinement::Enforced | Confinement::Partial => {
            assert_eq!(outside_err, Some(std::io::ErrorKind::PermissionDenied));
            assert!(!outside.exists(), "the write outside must not happen");
        }
        Confinement::Unavailable(why) => {
            assert!(outside_err.is_none());
            crate::common::skip(&format!(
                "the Landlock assertion: {why}; the write was NOT blocked by the kernel here"
            ));
        }
    }
    // The restriction is confined to that thread: this one can still write.
    fs::write(base.path().join("main-thread"), b"ok").expect("main thread unaffected");
}
