//! Time as the host's lifecycle needs it: the wall clock for what people
//! read and for deadlines that must survive a reboot, and the boot clock
//! (`CLOCK_BOOTTIME`, which counts suspend and never steps) for deadlines
//! within one boot, so that a clock step (NTP after a dead RTC battery, an
//! operator's `date -s`) neither fires a probation early nor keeps it armed
//! for hours.
//!
//! The agent reads time only through [`Clock`]; tests pass a clock they
//! step by hand.

/// One reading of the host's clocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Moment {
    /// Unix seconds (wall clock): display, and deadlines across reboots.
    pub wall: u64,
    /// The boot clock, where the kernel gives one with a boot ID.
    pub boot: Option<BootTime>,
}

/// Seconds since boot (`CLOCK_BOOTTIME`) in the boot named by `id`
/// (`/proc/sys/kernel/random/boot_id`): comparable only within that boot.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootTime {
    pub id: String,
    pub secs: u64,
}

impl Moment {
    /// A moment with only a wall clock (commands that compare nothing
    /// within a boot, and tests).
    pub fn wall(wall: u64) -> Moment {
        Moment { wall, boot: None }
    }

    pub fn boot_id(&self) -> Option<&str> {
        self.boot.as_ref().map(|b| b.id.as_str())
    }

    /// The deadline `secs` from now: on the wall clock, and on the boot
    /// clock where there is one.
    pub fn deadline_in(&self, secs: u64) -> Deadline {
        Deadline {
            wall: self.wall.saturating_add(secs),
            boot: self.boot.as_ref().map(|b| BootTime {
                id: b.id.clone(),
                secs: b.secs.saturating_add(secs),
            }),
        }
    }
}

/// A point in time both clocks can name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deadline {
    pub wall: u64,
    pub boot: Option<BootTime>,
}

impl Deadline {
    /// Whether the deadline has passed at `now`: by the boot clock within
    /// the boot it was set in (a wall-clock step does not move it), by the
    /// wall clock otherwise (after a reboot the boot clock starts again).
    pub fn passed(&self, now: &Moment) -> bool {
        match (&self.boot, &now.boot) {
            (Some(d), Some(n)) if d.id == n.id => n.secs >= d.secs,
            _ => now.wall >= self.wall,
        }
    }

    /// Seconds left at `now` (0 once passed), by the same rule.
    pub fn remaining(&self, now: &Moment) -> u64 {
        match (&self.boot, &now.boot) {
            (Some(d), Some(n)) if d.id == n.id => d.secs.saturating_sub(n.secs),
            _ => self.wall.saturating_sub(now.wall),
        }
    }
}

/// Where the agent reads the time.
pub trait Clock: Send + Sync {
    fn now(&self) -> Moment;
}

/// The host's clocks. `boot_id` overrides the kernel's boot ID (test builds
/// simulate a reboot with it; see `cli/env.rs`).
#[derive(Clone, Debug, Default)]
pub struct SystemClock {
    pub boot_id: Option<String>,
    /// The kernel's boot ID, read once: a process does not outlive its boot
    /// (an idle agent read it on every poll, twice).
    kernel_boot_id: std::sync::OnceLock<Option<String>>,
}

impl SystemClock {
    pub fn with_boot_id(boot_id: Option<String>) -> SystemClock {
        SystemClock {
            boot_id,
            ..SystemClock::default()
        }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Moment {
        let id = match (&self.boot_id, self.kernel_boot_id.get()) {
            (Some(id), _) => Some(id.clone()),
            (None, Some(id)) => id.clone(),
            // Kept once read; a failed read is tried again next time.
            (None, None) => {
                let id = read_boot_id();
                if id.is_some() {
                    let _ = self.kernel_boot_id.set(id.clone());
                }
                id
            }
        };
        let boot = id.map(|id| {
            let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
            BootTime {
                id,
                secs: u64::try_from(t.tv_sec).unwrap_or(0),
            }
        });
        Moment {
            wall: crate::fsutil::now_unix(),
            boot,
        }
    }
}

/// This boot's ID (`/proc/sys/kernel/random/boot_id`), if readable.
pub fn read_boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty() && s.len() <= 64)
}

/// Minutes after local midnight at `unix` in `tz` (the reboot window is
/// local time, as `system.autoUpgrade.rebootWindow`; D37). Across a DST
/// change the local clock jumps, and so does this: a window inside the
/// skipped hour never opens that night, one inside the repeated hour opens
/// twice.
pub fn local_minute(unix: u64, tz: &tz::TimeZone) -> u32 {
    let secs = i64::try_from(unix).unwrap_or(i64::MAX);
    let offset = tz
        .find_local_time_type(secs)
        .map_or(0, |t| i64::from(t.ut_offset()));
    (secs.saturating_add(offset).rem_euclid(86_400) / 60) as u32
}

/// The host's time zone (`TZ`, else `/etc/localtime`, as libc reads it),
/// or why it cannot be read (the caller falls back to UTC, as libc does
/// without `/etc/localtime`).
pub fn local_time_zone() -> Result<tz::TimeZone, String> {
    match std::env::var("TZ") {
        // As libc: an empty TZ is UTC, and so is a host without
        // /etc/localtime (NixOS with `time.timeZone = null`).
        Ok(tz) if tz.is_empty() => Ok(tz::TimeZone::utc()),
        // A zone name (`Europe/Berlin`, `:Europe/Berlin`) or a POSIX rule.
        Ok(tz) => tz::TimeZone::from_posix_tz(&tz).map_err(|e| format!("TZ={tz:?}: {e}")),
        Err(_) if std::fs::symlink_metadata("/etc/localtime").is_err() => Ok(tz::TimeZone::utc()),
        Err(_) => tz::TimeZone::local().map_err(|e| format!("/etc/localtime: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(wall: u64, boot: Option<(&str, u64)>) -> Moment {
        Moment {
            wall,
            boot: boot.map(|(id, secs)| BootTime {
                id: id.into(),
                secs,
            }),
        }
    }

    #[test]
    fn a_wall_clock_step_within_the_boot_does_not_move_a_deadline() {
        let d = at(100_000, Some(("b1", 50))).deadline_in(300);
        // The wall clock jumped a day ahead, 10 s later.
        assert!(!d.passed(&at(100_000 + 86_400, Some(("b1", 60)))));
        assert_eq!(d.remaining(&at(100_000 + 86_400, Some(("b1", 60)))), 290);
        // ... or a day back: the deadline still comes 300 s after arming.
        assert!(!d.passed(&at(100_000 - 86_400, Some(("b1", 349)))));
        assert!(d.passed(&at(100_000 - 86_400, Some(("b1", 350)))));
    }

    #[test]
    fn after_a_reboot_or_without_a_boot_clock_the_wall_clock_decides() {
        let d = at(1_000, Some(("b1", 50))).deadline_in(300);
        assert!(!d.passed(&at(1_299, Some(("b2", 5_000)))));
        assert!(d.passed(&at(1_300, Some(("b2", 1)))));
        assert!(d.passed(&at(1_300, None)));
        let w = Moment::wall(1_000).deadline_in(10);
        assert!(!w.passed(&at(1_009, Some(("b1", 0)))));
        assert!(w.passed(&at(1_010, Some(("b1", 0)))));
    }

    #[test]
    fn the_system_clock_reads_a_boot_clock_that_moves_forward() {
        let c = SystemClock::with_boot_id(Some("test-boot".into()));
        let a = c.now();
        let b = c.now();
        let (a, b) = (a.boot.expect("boot clock"), b.boot.expect("boot clock"));
        assert_eq!(a.id, "test-boot");
        assert!(b.secs >= a.secs);
    }

    /// Central European time with its DST rules (POSIX TZ: no tzdata
    /// needed): CET (UTC+1), CEST (UTC+2) from the last Sunday of March
    /// 02:00 to the last Sunday of October 03:00.
    fn berlin() -> tz::TimeZone {
        tz::TimeZone::from_posix_tz("CET-1CEST,M3.5.0,M10.5.0/3").expect("tz")
    }

    #[test]
    fn local_minute_follows_the_time_zone_across_dst() {
        use crate::host::config::RebootWindow;
        let w = RebootWindow {
            lower: "02:00".into(),
            upper: "04:00".into(),
        };
        let tz = berlin();
        // 2026-01-15 01:30 UTC = 02:30 CET: inside.
        let winter = 1_768_440_600;
        assert_eq!(local_minute(winter, &tz), 2 * 60 + 30);
        assert!(w.contains(local_minute(winter, &tz)));
        // 2026-07-15 01:30 UTC = 03:30 CEST: inside; the same UTC minute in
        // a UTC comparison (01:30) would be outside.
        let summer = 1_784_079_000;
        assert_eq!(local_minute(summer, &tz), 3 * 60 + 30);
        assert!(w.contains(local_minute(summer, &tz)));
        assert!(!w.contains(((summer % 86_400) / 60) as u32));
        // Spring forward, 2026-03-29: 01:59 CET is followed by 03:00 CEST.
        let before = 1_774_745_940; // 00:59 UTC
        assert_eq!(local_minute(before, &tz), 60 + 59);
        assert_eq!(local_minute(before + 60, &tz), 3 * 60);
        // A window inside the skipped hour never opens that night.
        let skipped = RebootWindow {
            lower: "02:15".into(),
            upper: "02:45".into(),
        };
        assert!((0..180)
            .map(|m| local_minute(before - 3600 + m * 60, &tz))
            .all(|m| !skipped.contains(m)));
        // Fall back, 2026-10-25: 02:30 local happens twice (CEST, then CET).
        let first = 1_792_888_200; // 00:30 UTC = 02:30 CEST
        let second = first + 3600; // 01:30 UTC = 02:30 CET
        assert_eq!(local_minute(first, &tz), 150);
        assert_eq!(local_minute(second, &tz), 150);
    }

    #[test]
    fn utc_zone_gives_the_utc_minute() {
        let utc = tz::TimeZone::utc();
        assert_eq!(local_minute(1_784_079_000, &utc), 60 + 30);
    }
}
