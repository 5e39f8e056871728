//! `tidings soak` briefly on tansu: the fleet as processes through a seeded
//! schedule of faults (the broker's own outages among them: tansu's
//! process killed and started again on its SQLite log), judged at the end.

use crate::harness::soak::{check, soak};

#[test]
fn a_short_seeded_soak_on_tansu_loses_repeats_and_reorders_nothing() {
    let (verdict, passed) = soak(&["--broker", "tansu", "--seed", "20261208", "--minutes", "1.5", "--mean-gap", "4s"]);
    check(&verdict, passed);
}
