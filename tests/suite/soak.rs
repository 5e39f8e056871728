//! `tidings soak` briefly: the fleet as processes through a seeded schedule
//! of faults on the embedded broker, judged at the end. The verdict must
//! pass, and must show that the run did what it says: faults of several
//! kinds injected, traffic delivered, deferred messages released.

use crate::harness::soak::{check, soak};

/// Seed 2 found two holes: a role restarted while Redis was down exited at
/// once (a crash loop), and a worker told to stop as the broker came back
/// hung in librdkafka's close past its drain timeout.
#[test]
fn a_short_seeded_soak_loses_repeats_and_reorders_nothing() {
    let (verdict, passed) = soak(&["--seed", "2", "--minutes", "2", "--mean-gap", "4s"]);
    check(&verdict, passed);
}
